// Writes tests/data/gpt2_js_cases.json: GPT-2 encodings made by the JavaScript encoder shipped in the
// npm package gpt-3-encoder 1.1.4 (an implementation independent of ours), for the tokenizer tests.
// Usage: node tools/gen_gpt2_cases.js third_party/gpt-3-encoder > tests/data/gpt2_js_cases.json
const path = require('path');
const dir = path.resolve(process.argv[2] || 'third_party/gpt-3-encoder');
const { encode } = require(path.join(dir, 'Encoder.js'));
const fixture = require(path.resolve(__dirname, '../tests/fixtures/gpt2_tokenizer_cases.json'));
const texts = fixture.cases.map(c => c.text).filter(t => t !== '<|endoftext|>');
texts.push(
  "Hello, world! How's it going?", "It's", "IT'S", "we'RE", "don't stop", "rock 'n' roll",
  "12 345 6789 1234567", "x=3.14e-10; y=2**31-1", "$5.99 / 100%", "   three leading", "trailing   ",
  "tab\tseparated\tvalues", "line1\nline2\r\nline3\n\n\nend", "\n", " ", "   ", "a  b   c    d",
  "Ünïcödé façade coöperate", "Москва — столица России", "Ελληνικά γράμματα", "日本語のテキストです。", "中文分词测试",
  "한국어 문장", "عربى نص", "עברית", "हिन्दी पाठ", "emoji 😀😃😄 and 👍🏽 and 👨‍👩‍👧", "🤗🤗🤗",
  "!!!???...,,,", "---===+++", "(parentheses) [brackets] {braces}", "<html><body>hi</body></html>",
  "def f(x):\n    return x ** 2\n", "camelCaseIdentifier snake_case_identifier", "email@example.com https://x.org/a?b=c",
  "Mixed123Numbers456", "a1b2c3", "Zero-width\u200bjoiner", "combining e\u0301 accent", "ﬁ ligature", "½ ¼ ¾ ² ³"
);
const cases = texts.map(text => ({ text, ids: encode(text) }));
process.stdout.write(JSON.stringify({
  tokenizer: 'gpt2 byte-level BPE, encoded by the JavaScript encoder of npm gpt-3-encoder 1.1.4',
  cases }, null, 1) + '\n');
