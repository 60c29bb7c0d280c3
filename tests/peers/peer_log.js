'use strict';
/*
 * What every peer app here shares: its command line (--port N, --log FILE, --path P; port also
 * from $PORT, 0 = any), a silent logger for the SDK, a frame log (one JSON line per frame: dir
 * "in" for what the bridge sent, "out" for what the app sent, "close" with code and reason) taken
 * before the SDK sees a frame, so a frame that crashes the SDK is still recorded, and
 * `listen(server)`, which prints "LISTENING <port>" once ready and exits cleanly on SIGTERM.
 */
const fs = require('fs');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const port = Number(option('--port', process.env.PORT || '0'));
const logFile = option('--log', null);

function record(entry) {
  const line = JSON.stringify(entry) + '\n';
  if (logFile) fs.appendFileSync(logFile, line);
  else process.stderr.write(line);
}

function parseFrame(raw) {
  try {
    return JSON.parse(raw.toString());
  } catch (err) {
    return { _raw: raw.toString() };
  }
}

const noop = () => {};
const logger = { info: noop, debug: noop, error: noop, warn: noop };
logger.child = () => logger;

/* Wrap a service's handle(ws, req-or-path) so every frame of its sockets is logged. */
function logFrames(svc, pathOf) {
  const handle = svc.handle.bind(svc);
  svc.handle = (ws, second) => {
    const path = pathOf(second);
    ws.on('message', (raw) => record({ dir: 'in', path, msg: parseFrame(raw) }));
    const send = ws.send.bind(ws);
    ws.send = (data, ...rest) => {
      record({ dir: 'out', msg: parseFrame(data) });
      return send(data, ...rest);
    };
    ws.on('close', (code, reason) => record({ dir: 'close', code, reason: String(reason || '') }));
    return handle(ws, second);
  };
}

function listen(server) {
  server.listen(port, '127.0.0.1', () => {
    process.stdout.write(`LISTENING ${server.address().port}\n`);
  });
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

module.exports = { option, logger, noop, logFrames, listen };
