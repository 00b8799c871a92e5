// Deterministic multi-script test corpus for the tokenizer oracle test and the benchmarks.
//
//   node gen-corpus.mjs OUT_DIR [--mb N]
//
// Writes OUT_DIR/corpus.jsonl (one document per line: a JSON string, or {"b64": ...} for raw
// bytes that are not valid UTF-8), OUT_DIR/corpus.txt (the generated documents joined by "\n")
// and OUT_DIR/corpus-natural.txt (the same without the 100–2600-character single-piece
// documents, which are quadratic for tiktoken and rare in real requests). The two .txt files are
// the benchmark inputs. Same bytes on every run and machine (seeded PRNG, no Date/locale use).
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
if (args.length < 1) {
  console.error('usage: node gen-corpus.mjs OUT_DIR [--mb N]');
  process.exit(2);
}
const outDir = args[0];
const mbIdx = args.indexOf('--mb');
const targetBytes = Math.round((mbIdx >= 0 ? Number(args[mbIdx + 1]) : 3) * 1024 * 1024);

// mulberry32
let seed = 0x7011ea7e;
function rnd() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n) => Math.floor(rnd() * n);
const pick = (a) => a[int(a.length)];
const zipf = (a) => a[Math.min(a.length - 1, Math.floor(a.length * Math.pow(rnd(), 2.2)))];
const cp = (c) => String.fromCodePoint(c);
const range = (lo, hi) => cp(lo + int(hi - lo + 1));
const repeat = (n, f) => Array.from({ length: n }, f).join('');

const EN = `the of and to a in is it you that he was for on are with as I his they be at one have
this from or had by hot word but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them write would like so these
her long make thing see him two has look more day could go come did number sound no most people
my over know water than call first who may down side been now find any new work part take get
place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end
put home read hand port large spell add even land here must big high such follow act why ask men
change went light kind off need house picture try us again animal point mother world near build
self earth father head stand own page should country found answer school grow study still learn
plant cover food sun four between state keep eye never last let thought city tree cross farm
hard start might story saw far sea draw left late run while press close night real life few
north gateway token request model latency throughput backend deployment quota tenant stream
Azure OpenAI JSON HTTP tokenizer encoding synergy leverage bandwidth deliverable pivot`.split(/\s+/);
const CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL",
  "'D", "'M", "'ſ", "'\u017F", "n't", "'x", "'"];
const RU = `и в не на я быть он с что а по это она этот к но они мы как из у который то за свой
весь год от так о для ты же все тот мочь вы человек такой его сказать только или ещё бы себя один
как уже до время если сам когда другой вот говорить наш мой знать стать при чтобы дело жизнь
кто первый очень два день её новый рука даже во со раз где там под можно ну какой после их работа
без самый потом надо хотеть ли слово идти большой должен место иметь ничто Москва Россия Привет`.split(/\s+/);
const AR = `في من على إلى أن عن مع هذا كان التي الذي ما لا هذه بين كل قد ذلك بعد عند أو حتى إذا
العربية اللغة مرحبا السلام عليكم شكرا كتاب مدرسة بيت سيارة مدينة الحكومة وزارة الاقتصاد`.split(/\s+/);
const HARAKAT = ['\u064B', '\u064C', '\u064D', '\u064E', '\u064F', '\u0650', '\u0651', '\u0652'];
const ZH = '的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从';
const DEVANAGARI = ['नमस्ते', 'भारत', 'हिन्दी', 'भाषा', 'विद्यालय', 'कृपया', 'धन्यवाद', 'क्षमा', 'ज्ञान'];
const THAI = ['สวัสดี', 'ภาษาไทย', 'ขอบคุณ', 'กรุงเทพมหานคร', 'ประเทศไทย'];
const GREEK = ['Καλημέρα', 'κόσμε', 'ΑΘΗΝΑ', 'ελληνικά', 'φιλοσοφία', 'ΣΟΦΙΑ'];
const HEBREW = ['שלום', 'עולם', 'תודה', 'ישראל', 'סֵפֶר'];
const EMOJI = ['😀', '🎉', '🚀', '👍', '👍🏽', '❤️', '🔥', '✨', '🤖', '🇺🇸', '🇯🇵', '🇩🇪', '1️⃣', '#️⃣',
  '👨‍👩‍👧‍👦', '👩🏽‍💻', '🏳️‍🌈', '🧑‍🤝‍🧑', '🤷‍♂️', '☺', '✓', '™', '©', '🫠', '🥲'];
const SPACES = [' ', '  ', '   ', '\t', '\t\t', '\n', '\n\n', '\r\n', '\r\n\r\n', '\r', ' \n', '\n ',
  '\u00A0', '\u3000', '\u2003', '\u2009', '\u202F', '\u205F', '\u1680', '\u0085', '\u2028', '\u2029',
  '\u000B', '\u000C', '\u180E', '\uFEFF', '\u200B', ' \u00A0 ', '\n\u0085\n', ' \u180E '];

function word() {
  let w = zipf(EN);
  const r = rnd();
  if (r < 0.06) w = w[0].toUpperCase() + w.slice(1);
  else if (r < 0.08) w = w.toUpperCase();
  else if (r < 0.1) w += pick(CONTRACTIONS);
  return w;
}
function sentence(words) {
  let s = word();
  s = s[0].toUpperCase() + s.slice(1);
  for (let i = 1; i < words; ++i) {
    const r = rnd();
    s += r < 0.05 ? ', ' : r < 0.07 ? ' - ' : r < 0.08 ? ' (' : ' ';
    s += word();
    if (r >= 0.07 && r < 0.08) s += ')';
    if (rnd() < 0.02) s += ' ' + String(int(100000));
  }
  return s + pick(['.', '.', '.', '?', '!', '...', ':', ';']);
}
function prose() {
  let out = '';
  const paragraphs = 1 + int(4);
  for (let p = 0; p < paragraphs; ++p) {
    out += repeat(2 + int(6), () => sentence(4 + int(18)) + ' ').trimEnd();
    out += pick(['\n\n', '\n', '\r\n\r\n', '\n\n\n']);
  }
  return out;
}
function ident() {
  const parts = repeat(1 + int(3), () => zipf(EN).toLowerCase() + '|').split('|').filter(Boolean);
  const style = int(4);
  if (style === 0) return parts.join('_');
  if (style === 1) return parts.map((p, i) => (i ? p[0].toUpperCase() + p.slice(1) : p)).join('');
  if (style === 2) return parts.map((p) => p[0].toUpperCase() + p.slice(1)).join('');
  return parts.join('_').toUpperCase();
}
function code() {
  const nl = rnd() < 0.2 ? '\r\n' : '\n';
  const indent = rnd() < 0.3 ? '\t' : pick(['  ', '    ']);
  const lines = [];
  const n = 5 + int(30);
  let depth = 0;
  for (let i = 0; i < n; ++i) {
    const pad = indent.repeat(depth);
    const k = int(10);
    if (k === 0 && depth < 4) {
      lines.push(`${pad}${pick(['if', 'while', 'for'])} (${ident()} ${pick(['==', '!=', '<=', '>=', '&&', '||'])} ${int(1000)}) {`);
      ++depth;
    } else if (k === 1 && depth > 0) {
      --depth;
      lines.push(`${indent.repeat(depth)}}`);
    } else if (k === 2) {
      lines.push(`${pad}// ${sentence(3 + int(8))}`);
    } else if (k === 3) {
      lines.push(`${pad}def ${ident()}(self, ${ident()}: int = ${int(99)}) -> str:`);
    } else if (k === 4) {
      lines.push(`${pad}const ${ident()} = await fetch("https://api.example.com/v1/${ident()}/${int(9999)}?q=${ident()}&n=${int(50)}");`);
    } else if (k === 5) {
      lines.push(`${pad}std::vector<std::uint32_t> ${ident()}{${int(9)}, 0x${int(65535).toString(16)}};`);
    } else if (k === 6) {
      lines.push('');
    } else {
      lines.push(`${pad}${ident()}.${ident()}(${ident()}, "${sentence(2 + int(4))}", ${(rnd() * 1000).toFixed(3)});`);
    }
  }
  return lines.join(nl) + nl;
}
function jsonValue(depth) {
  const k = int(depth > 3 ? 4 : 7);
  if (k === 0) return int(1e6) - 5e5;
  if (k === 1) return rnd() < 0.5 ? sentence(2 + int(8)) : pick([...RU, ...AR, ...DEVANAGARI]);
  if (k === 2) return rnd() < 0.5;
  if (k === 3) return rnd() * 1000;
  if (k === 4) return Array.from({ length: int(5) }, () => jsonValue(depth + 1));
  const o = {};
  for (let i = 0, n = 1 + int(5); i < n; ++i) o[ident()] = jsonValue(depth + 1);
  return o;
}
function json() {
  const v = { id: `chatcmpl-${int(1e9).toString(36)}`, object: 'chat.completion', data: jsonValue(0) };
  return JSON.stringify(v, null, pick([0, 2, 4, '\t'])) + '\n';
}
function cjk() {
  let s = '';
  for (let i = 0, n = 20 + int(200); i < n; ++i) {
    const r = rnd();
    if (r < 0.6) s += ZH[int(ZH.length)];
    else if (r < 0.66) s += range(0x4e00, 0x9fa5);
    else if (r < 0.74) s += range(0x3041, 0x3096);  // hiragana
    else if (r < 0.8) s += range(0x30a1, 0x30fa);   // katakana
    else if (r < 0.86) s += range(0xac00, 0xd7a3);  // hangul syllables
    else if (r < 0.93) s += pick(['。', '、', '「', '」', '！', '？', '：', '（', '）', '・', 'ー']);
    else if (r < 0.96) s += pick([' ', '\n', 'AI', 'GPT-4o', String(int(2030))]);
    else s += range(0xff10, 0xff5a);  // full-width digits and letters
  }
  return s + '\n';
}
function words(list, n, sep = ' ') {
  return repeat(n, () => pick(list) + (rnd() < 0.1 ? pick(['.', ',', '!', '?', '،', '؟']) : '') + sep).trimEnd();
}
function cyrillic() { return words(RU, 20 + int(80)) + '.\n'; }
function arabic() {
  let s = words(AR, 15 + int(60));
  if (rnd() < 0.5) s = s.replace(/([\u0628-\u064A])/g, (m) => (rnd() < 0.3 ? m + pick(HARAKAT) : m));
  if (rnd() < 0.5) s += ' ' + repeat(1 + int(6), () => range(0x0660, 0x0669));  // Arabic-Indic digits
  return s + '\n';
}
function emoji() {
  return repeat(5 + int(40), () => {
    const r = rnd();
    if (r < 0.5) return pick(EMOJI);
    if (r < 0.8) return word() + ' ';
    return pick(EMOJI) + pick(EMOJI) + ' ';
  }) + '\n';
}
function combining() {
  return repeat(10 + int(40), () => {
    const r = rnd();
    if (r < 0.4) return word() + repeat(1 + int(3), () => range(0x0300, 0x036f)) + ' ';
    if (r < 0.55) return range(0x0300, 0x036f) + word() + ' ';  // a mark without a base
    if (r < 0.7) return pick(DEVANAGARI) + ' ';
    if (r < 0.8) return pick(THAI) + ' ';
    if (r < 0.9) return pick(GREEK) + ' ';
    return pick(HEBREW) + ' ';
  }) + '\n';
}
function numbers() {
  return repeat(5 + int(20), () => {
    const r = rnd();
    if (r < 0.2) return repeat(1 + int(400), () => String(int(10))) + ' ';
    if (r < 0.4) return `${int(1e6).toLocaleString('en-US')}.${int(100)} `;
    if (r < 0.5) return pick(['²', '³', '½', '¾', 'Ⅻ', 'ⅷ', '①', '⑳', '٣', '७', '๓', '𝟙𝟚']) + String(int(100)) + ' ';
    if (r < 0.6) return `v${int(10)}.${int(99)}.${int(999)}-rc${int(9)} `;
    if (r < 0.7) return `0x${int(2 ** 31).toString(16).toUpperCase()} `;
    if (r < 0.8) return `${int(24)}:${int(60)}:${int(60)}Z `;
    return word() + String(int(1000)) + word() + ' ';
  }) + '\n';
}
function whitespace() {
  return repeat(10 + int(60), () => {
    const r = rnd();
    if (r < 0.3) return pick(SPACES);
    if (r < 0.4) return ' '.repeat(1 + int(200));
    if (r < 0.45) return '\n'.repeat(1 + int(20)) + ' '.repeat(int(10));
    if (r < 0.5) return repeat(1 + int(10), () => pick(['\r\n', '\n', '\r', ' ', '\t']));
    return word() + pick(['', '!', '?', '.', '...', ':']);
  });
}
function specials() {
  return repeat(3 + int(10), () => pick(['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|fim_prefix|>',
    '<|endofprompt|>', '<|start|>', '<|message|>', '<|channel|>', '<|', '|>']) + pick(['', ' ', '\n', word()]));
}
function web() {
  const url = `https://${ident().replace(/_/g, '-')}.example.org/${ident()}/${int(1e5)}/index.html?x=${int(9)}#${ident()}`;
  return `# ${sentence(4)}\n\n- [link](${url})\n- **${word()}** \`${ident()}()\` ${sentence(6)}\n` +
    `> ${sentence(8)}\n\n| ${word()} | ${word()} |\n|---|---|\n| ${int(100)} | ${int(100)}% |\n` +
    `path/to/${ident()}.cpp:${int(999)}:${int(80)}: error: ${sentence(5)}\n//${ident()}\n/\n/\n`;
}
function unicodeSoup() {
  // Blocks assigned long before Unicode 14 (PCRE2 10.42's tables): no version skew.
  const blocks = [[0x00a1, 0x024f], [0x0370, 0x03ff], [0x0400, 0x04ff], [0x0590, 0x05ff], [0x0600, 0x06ff],
    [0x0900, 0x097f], [0x0e00, 0x0e5b], [0x1e00, 0x1eff], [0x2000, 0x206f], [0x2190, 0x23ff], [0x2500, 0x27bf],
    [0x3000, 0x303f], [0xfb00, 0xfb4f], [0xff00, 0xffef], [0x1d400, 0x1d7ff], [0x1f300, 0x1f64f]];
  return repeat(20 + int(100), () => {
    const b = pick(blocks);
    return rnd() < 0.1 ? pick(SPACES) : range(b[0], b[1]);
  }) + '\n';
}
let lastWasLong = false;
function longPiece() {
  lastWasLong = true;
  const r = rnd();
  const n = 100 + int(2500);
  if (r < 0.25) return repeat(n, () => String.fromCharCode(97 + int(26)));
  if (r < 0.35) return pick(['a', 'x', 'e', 'Z']).repeat(n);
  if (r < 0.5) return repeat(n, () => (rnd() < 0.5 ? String.fromCharCode(65 + int(26)) : String.fromCharCode(97 + int(26))));
  if (r < 0.6) return repeat(n / 3, () => ZH[int(ZH.length)]);
  if (r < 0.7) return pick(['!', '=', '-', '*', '#', '.', '~', '/']).repeat(n);
  if (r < 0.8) return repeat(n, () => pick('!@#$%^&*()_+-={}[]|\\:";\'<>?,./`~'.split('')));
  if (r < 0.9) return repeat(n / 4, () => pick(RU));
  return ' '.repeat(n) + word() + '\n'.repeat(int(300)) + '\t'.repeat(int(100));
}

const EDGE_CASES = [
  '', ' ', '  ', '\n', '\r\n', '\r', '\t', ' \n', '\n ', '  \n', 'a\n ', 'a\n  b', 'hello  \n\n  ',
  'x\n \n ', ' x', 'x ', 'x  ', '  x  ', "'s", "'S", "'ſ", "don'ſ", "DON'T", "I'LL", "we'Re", "it's",
  "'", "''", "'''s", "x'", "rock'n'roll", "O'Neil's", "'ll've", "Y'all'd've", '\u0085', 'a\u0085b',
  '\u0085\u0085 x', '\uFEFF', '\uFEFFhello', '\uFEFF hello', '\u180E', 'a\u180Eb', ' \u180E ', '\u180E\n',
  '\u00A0\u00A0x', 'x\u00A0', '\u3000test', '\u2028\u2029', 'a\u200Bb', 'a\u200Db', '1', '12', '123',
  '1234', '1234567', '١٢٣٤٥', '²³', '½', 'ⅫⅩ', '①②③④', '<|endoftext|>', '<|im_start|>user\nhi<|im_end|>',
  '😀', '👨‍👩‍👧‍👦', '🇺🇸🇬🇧', '1️⃣', 'e\u0301\u0301', '\u0301abc', 'ǅungla', 'ǈ', 'ʰʲ', 'ABCdef', 'HTMLParser',
  'iPhone', "McDonald's", '/path/to/file\n/', '!!!\n\n/', 'a/b', '//\n//', 'x \t\ty', '\t\t\n\t', '\v\f',
  '\u0000\u0001', '\u007F', 'a\r\rb', '𝕳𝖊𝖑𝖑𝖔', 'ﬁ', 'ß', 'ẞ', 'İstanbul', '\uE000', '\uFFFD',
  '\u{10FFFF}', '\u{E0001}', '\uFFFF', 'The quick brown fox jumps over the lazy dog.',
  'Ünïcödé wörds ÀÉÎÕÜ', 'Привет, мир!', 'مرحبا بالعالم', '你好，世界', 'こんにちは世界', '안녕하세요',
  ' ' + 'a'.repeat(5000), 'b'.repeat(10000), '\n'.repeat(3000), ' '.repeat(4000) + 'x',
];

// Raw byte documents that are not valid UTF-8: the oracle decodes them with TextDecoder, as a
// JS client or JSON decoder would, before encoding.
const INVALID_UTF8 = [
  [0xff], [0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80],
  [0x61, 0xe2, 0x82], [0xe2, 0x82, 0x61], [0xf0, 0x9f, 0x98], [0x80, 0x80, 0x61], [0xc3],
  [0x68, 0x69, 0xfe, 0x20, 0x74, 0x68, 0x65, 0x72, 0x65], [0xf5, 0x80], [0xe0, 0xa0], [0xf0, 0x90, 0x80],
];

const generators = [
  [prose, 38], [code, 12], [json, 10], [web, 5], [cjk, 6], [cyrillic, 4], [arabic, 3], [emoji, 3],
  [combining, 4], [numbers, 4], [whitespace, 4], [specials, 1], [unicodeSoup, 4], [longPiece, 2],
];
const totalWeight = generators.reduce((s, [, w]) => s + w, 0);
function generate() {
  let r = rnd() * totalWeight;
  for (const [g, w] of generators) {
    if ((r -= w) < 0) return g();
  }
  return prose();
}

const docs = [...EDGE_CASES];
const natural = [];
let bytes = docs.reduce((s, d) => s + Buffer.byteLength(d), 0);
while (bytes < targetBytes) {
  lastWasLong = false;
  let d = generate();
  // Some documents are requests of mixed content.
  if (rnd() < 0.15) d += generate();
  docs.push(d);
  if (!lastWasLong) natural.push(d);
  bytes += Buffer.byteLength(d);
}

fs.mkdirSync(outDir, { recursive: true });
const lines = docs.map((d) => JSON.stringify(d));
for (const b of INVALID_UTF8) lines.push(JSON.stringify({ b64: Buffer.from(b).toString('base64') }));
fs.writeFileSync(path.join(outDir, 'corpus.jsonl'), lines.join('\n') + '\n');
fs.writeFileSync(path.join(outDir, 'corpus.txt'), docs.slice(EDGE_CASES.length).join('\n'));
fs.writeFileSync(path.join(outDir, 'corpus-natural.txt'), natural.join('\n'));
console.log(`gen-corpus: ${docs.length} documents, ${(bytes / 1048576).toFixed(2)} MiB -> ${outDir}`);
