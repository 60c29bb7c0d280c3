'use strict';
/*
 * A Voice Gateway app on the jambonz authors' current SDK, @jambonz/sdk (its `websocket`
 * entry): the peer for apps written from now on. It exercises what the SDK adds over
 * node-client-ws: send() as the session:new ack and, later, as a `redirect` command; reply() as a
 * hook's ack and reply({execImmediate: false}) as a queued `redirect` command; and the inject
 * commands (record, dtmf, tag, redirect).
 *
 * usage: node sdk_app.js [--port N] [--log FILE] [--path P]   (port also from $PORT; 0 = any)
 * Prints "LISTENING <port>" on stdout once ready. Every frame received (dir "in") and sent
 * (dir "out") is written as one JSON line to FILE, or to stderr without --log; the socket's end
 * as {"dir": "close", "code": N, "reason": "..."}.
 */
const fs = require('fs');
const http = require('http');
const { createEndpoint } = require('@jambonz/sdk/websocket');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const port = Number(option('--port', process.env.PORT || '0'));
const logFile = option('--log', null);
const servicePath = option('--path', '/');

const RECORDER = 'sip:recorder@rec.example.com';

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

const server = http.createServer();
const makeService = createEndpoint({ server, logger });
const svc = makeService({ path: servicePath });

/* Log every frame before the SDK sees it, so a frame that breaks the SDK is still recorded. */
const handle = svc.handle.bind(svc);
svc.handle = (ws, req) => {
  const path = req.originalUrl || req.url;
  ws.on('message', (raw) => record({ dir: 'in', path, msg: parseFrame(raw) }));
  const send = ws.send.bind(ws);
  ws.send = (data, ...rest) => {
    record({ dir: 'out', msg: parseFrame(data) });
    return send(data, ...rest);
  };
  ws.on('close', (code, reason) => record({ dir: 'close', code, reason: String(reason || '') }));
  return handle(ws, req);
};

const ask = (session, text) => session.gather({
  input: ['speech', 'digits'],
  actionHook: 'voice',
  timeout: 8,
  say: { text },
});

function onVoice(session, evt) {
  const tier = session.locals.tier || 'none';
  if (evt.reason === 'speechDetected') {
    const alternatives = (evt.speech && evt.speech.alternatives) || [];
    const transcript = alternatives.length ? alternatives[0].transcript : '';
    session.say({ text: `SDK heard ${transcript}.` });
    ask(session, 'Anything else?').reply();
  } else if (evt.reason === 'dtmfDetected' && evt.digits === '1') {
    // inject commands run at once, before the hook's ack
    session.injectRecord('startCallRecording', { recordingID: 'rec-sdk-1', siprecServerURL: RECORDER });
    session.say({ text: 'Recording started.' });
    ask(session, 'What next?').reply();
  } else if (evt.reason === 'dtmfDetected' && evt.digits === '2') {
    session.injectDtmf('5', 250);
    session.injectTag({ tier: 'gold', menu: 'two' });
    session.locals.tier = 'gold';
    session.say({ text: 'Tagged.' });
    ask(session, 'What next?').reply();
  } else if (evt.reason === 'dtmfDetected' && evt.digits === '3') {
    // the ack carries the first verb; the rest follows as a queued redirect command
    session.say({ text: 'First part.' }).reply();
    session.say({ text: 'Second part.' });
    ask(session, 'What next?').send({ execImmediate: false });
  } else if (evt.reason === 'dtmfDetected' && evt.digits === '4') {
    session.injectRedirect('menu');
    session.reply();
  } else if (evt.reason === 'dtmfDetected' && evt.digits === '5') {
    // acked at once; the answer follows as a `redirect` command that replaces the waiting gather
    session.say({ text: 'Looking that up.' });
    ask(session, 'One moment.').reply();
    setTimeout(() => {
      session.say({ text: 'Found it.' });
      ask(session, 'What next?').send();
    }, 150);
  } else if (evt.reason === 'dtmfDetected' && evt.digits === '9') {
    session
      .say({ text: `Goodbye, ${tier} caller.` })
      .hangup({ headers: { 'X-Reason': 'caller pressed nine' } })
      .reply();
  } else if (evt.reason === 'timeout') {
    session.say({ text: 'Still there?' });
    ask(session, 'Say something or press a key.').reply();
  } else {
    ask(session, 'That key does nothing.').reply();
  }
}

svc.on('session:new', (session) => {
  session.on('voice', (evt) => onVoice(session, evt));
  session.on('menu', () => {
    session.say({ text: 'Main menu.' });
    ask(session, 'Press one to record, two to tag.').reply();
  });
  session.on('call:status', noop);
  session.on('close', noop);
  session.on('error', noop);

  session
    .config({ synthesizer: { vendor: 'default', language: 'en-GB' } })
    .say({ text: 'Welcome to the SDK test app.' });
  ask(session, 'Say something or press a key.').send();
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
