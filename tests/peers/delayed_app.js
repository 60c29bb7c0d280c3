'use strict';
/*
 * A Voice Gateway app on @jambonz/node-client-ws that answers every hook with an EMPTY ack and
 * sends its outputs later, one `session.send({execImmediate: false})` at a time, with delays —
 * so each output reaches the bridge in its own `command redirect` (queueCommand: true).
 *
 * usage: node delayed_app.js [--port N] [--log FILE]   Prints "LISTENING <port>" when ready.
 * Every frame in/out is logged as a JSON line to FILE (or stderr), plus {"dir":"close",...}.
 *
 * Flow: greeting (in the session:new ack) = say "Welcome." + gather(voice).
 * On any `voice` hook: empty ack, then after 40 ms say "Step 1.", after 80 ms say "Step 2.",
 * after 120 ms say "Step 3." + gather(voice) — three separate redirect commands.
 * On DTMF "7": empty ack, then after 30 ms say "Bye." + hangup.
 * On DTMF "5": empty ack, nothing else; 150 ms later an unsolicited say "Notice." arrives
 * (the flow speaking between caller inputs, like Cognigy's Inject & Notify).
 */
const http = require('http');
const { createEndpoint } = require('@jambonz/node-client-ws');
const { option, logger, noop, logFrames, listen } = require('./peer_log');

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const makeService = createEndpoint({ server, logger });
const svc = makeService({ path: '*' });
logFrames(svc, (path) => path);

const later = (ms, fn) => setTimeout(fn, ms);
const gather = (session) => session.gather({ input: ['speech', 'digits'], actionHook: 'voice', timeout: 10 });

svc.on('session:new', (session) => {
  session.on('voice', (evt) => {
    session.reply(); // empty ack: the outputs come later
    if (evt.reason === 'dtmfDetected' && evt.digits === '7') {
      later(30, () => session.say({ text: 'Bye.' }).hangup().send({ execImmediate: false }));
      return;
    }
    if (evt.reason === 'dtmfDetected' && evt.digits === '5') {
      later(150, () => session.say({ text: 'Notice.' }).send({ execImmediate: false }));
      return;
    }
    later(40, () => session.say({ text: 'Step 1.' }).send({ execImmediate: false }));
    later(80, () => session.say({ text: 'Step 2.' }).send({ execImmediate: false }));
    later(120, () => gather(session.say({ text: 'Step 3.' })).send({ execImmediate: false }));
  });
  session.on('call:status', noop);
  session.on('close', noop);
  gather(session.say({ text: 'Welcome.' })).send();
});

listen(server);
