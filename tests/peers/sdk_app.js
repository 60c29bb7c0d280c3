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
const http = require('http');
const { createEndpoint } = require('@jambonz/sdk/websocket');
const { option, logger, noop, logFrames, listen } = require('./peer_log');

const servicePath = option('--path', '/');
const RECORDER = 'sip:recorder@rec.example.com';

const server = http.createServer();
const makeService = createEndpoint({ server, logger });
const svc = makeService({ path: servicePath });
logFrames(svc, (req) => req.originalUrl || req.url);

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

listen(server);
