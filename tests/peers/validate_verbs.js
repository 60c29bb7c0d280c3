'use strict';
/*
 * Validates verb arrays with @jambonz/verb-specifications, the validator the real
 * feature-server applies. Input: one JSON verb array per stdin line. Output: one JSON line
 * per input line, {"ok":true} or {"ok":false,"error":"..."}.
 */
const readline = require('readline');
const { validate } = require('@jambonz/verb-specifications');

const noop = () => {};
const logger = { info: noop, debug: noop, error: noop, warn: noop, child: () => logger };

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  if (line.trim() === '') return;
  let result;
  try {
    validate(logger, JSON.parse(line));
    result = { ok: true };
  } catch (err) {
    result = { ok: false, error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(result) + '\n');
});
