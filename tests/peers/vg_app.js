'use strict';
/*
 * A small Cognigy-like Voice Gateway app on the official @jambonz/node-client-ws SDK: the strict
 * end-to-end peer for the bridge (a message without msgid or data crashes it, on purpose).
 *
 * usage: node vg_app.js [--port N] [--log FILE] [--path P]   (port also from $PORT; 0 = any)
 * Prints "LISTENING <port>" on stdout once ready. Every frame received (dir "in") and sent
 * (dir "out") is written as one JSON line to FILE, or to stderr without --log; the socket's end
 * as {"dir": "close", "code": N, "reason": "..."}.
 */
const http = require('http');
const { createEndpoint } = require('@jambonz/node-client-ws');
const { option, logger, noop, logFrames, listen } = require('./peer_log');

const servicePath = option('--path', '*');
const PLAY_URL = 'https://media.example.com/prompts/node-app.wav';
const TRANSFER_NUMBER = '+4989123456';

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const makeService = createEndpoint({ server, logger });
const svc = makeService({ path: servicePath });
logFrames(svc, (path) => path);

const prompt = (session, text) => session.gather({
  input: ['speech', 'digits'],
  actionHook: 'voice',
  timeout: 10,
  say: { text },
});

svc.on('session:new', (session) => {
  session.on('voice', (evt) => {
    if (evt.reason === 'speechDetected') {
      const alternatives = (evt.speech && evt.speech.alternatives) || [];
      const transcript = alternatives.length ? alternatives[0].transcript : '';
      session.say({ text: `You said ${transcript}.` });
      prompt(session, 'Anything else?').reply();
    } else if (evt.reason === 'dtmfDetected' && evt.digits === '1') {
      session
        .play({ url: PLAY_URL })
        .sip_request({
          method: 'INFO',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ menu: 'one', source: 'node-app' }),
        });
      prompt(session, 'What next?').reply();
    } else if (evt.reason === 'dtmfDetected' && evt.digits === '2') {
      session
        .dial({
          target: [{ type: 'phone', number: TRANSFER_NUMBER }],
          headers: { 'X-Transfer-Reason': 'agent-requested' },
          actionHook: 'dial',
        })
        .reply();
    } else if (evt.reason === 'dtmfDetected' && evt.digits === '9') {
      session
        .say({ text: 'Goodbye.' })
        .hangup({ headers: { 'X-Reason': 'caller pressed nine' } })
        .reply();
    } else if (evt.reason === 'timeout') {
      session.say({ text: 'Sorry, I did not hear anything.' });
      prompt(session, 'Say something or press a key.').reply();
    } else {
      session.say({ text: 'That key does nothing.' });
      prompt(session, 'Say something or press a key.').reply();
    }
  });
  session.on('dial', () => {
    session
      .say({ text: 'The transfer has ended.' })
      .hangup({ headers: { 'X-Reason': 'transfer ended' } })
      .reply();
  });
  session.on('call:status', noop);
  session.on('close', noop);

  session
    .config({ synthesizer: { vendor: 'default', language: 'en-US' } })
    .say({ text: 'Welcome to the Node test app.' });
  prompt(session, 'Say something or press a key.').send();
});

listen(server);
