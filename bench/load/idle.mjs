// Idle keep-alive connections: the memory each one costs a server.
//
//   node bench/load/idle.mjs --port P --pids "PID ..." --count 10000 --body FILE [--path PATH]
//                            [--key KEY] [--parallel 64] [--timeout-s 120]
//
// Reads VmRSS of the server's processes (summed), opens --count connections, sends ONE request on
// each (reading the whole answer, so every connection has served a request and is back to waiting
// for the next one), keeps them all open, waits a second, reads VmRSS again and prints one JSON
// line: {"open", "failed", "closed_early", "rss_before_kb", "rss_after_kb", "kb_per_conn"}.
// At most --parallel connections are opening or waiting for their answer at once, so the load
// itself stays small. Exit status 1 when a connection failed or the server closed one early.
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

function parse_args(argv) {
  const args = { path: '/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21',
                 key: 'bench-backend-key', parallel: 64, 'timeout-s': 120 };
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const need of ['port', 'pids', 'count', 'body'])
    if (args[need] === undefined) throw new Error(`--${need} is required`);
  return args;
}

function rss_kb(pids) {
  let total = 0;
  for (const pid of pids) {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    total += Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
  }
  return total;
}

// True once `data` holds one whole HTTP response (Content-Length or chunked framing).
function response_complete(data) {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const head = data.subarray(0, end).toString('latin1').toLowerCase();
  const body = data.subarray(end + 4);
  const length = /\r\ncontent-length:\s*(\d+)/.exec(head);
  if (length) return body.length >= Number(length[1]);
  if (/\r\ntransfer-encoding:\s*chunked/.test(head)) return body.toString('latin1').endsWith('0\r\n\r\n');
  return false;
}

// Opens one connection and sends one request; resolves with the socket, still open, once the
// answer has arrived (status 200 required), or rejects.
function open_one(port, request, stats) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let data = Buffer.alloc(0);
    let answered = false;
    socket.on('error', (e) => { if (!answered) reject(e); });
    socket.on('close', () => { if (answered) stats.closed_early++; else reject(new Error('closed before answering')); });
    socket.on('connect', () => socket.write(request));
    socket.on('data', (chunk) => {
      if (answered) return;
      data = Buffer.concat([data, chunk]);
      if (!response_complete(data)) return;
      answered = true;
      const status = data.subarray(0, 12).toString('latin1');
      if (!status.startsWith('HTTP/1.1 200')) reject(new Error(`answer: ${status}`));
      else resolve(socket);
    });
  });
}

async function open_all(args, request, stats) {
  const sockets = [];
  let next = 0;
  async function lane() {
    while (next < args.count) {
      next++;
      try { sockets.push(await open_one(args.port, request, stats)); }
      catch (e) { stats.failed++; stats.last_error = String(e.message ?? e); }
    }
  }
  await Promise.all(Array.from({ length: Math.min(args.parallel, args.count) }, lane));
  return sockets;
}

async function main() {
  const args = parse_args(process.argv.slice(2));
  args.count = Number(args.count); args.parallel = Number(args.parallel);
  const pids = String(args.pids).trim().split(/\s+/).map(Number);
  const body = fs.readFileSync(args.body);
  const request = Buffer.concat([Buffer.from(
    `POST ${args.path} HTTP/1.1\r\nHost: 127.0.0.1:${args.port}\r\ncontent-type: application/json\r\n` +
    `api-key: ${args.key}\r\ncontent-length: ${body.length}\r\n\r\n`, 'latin1'), body]);
  const timer = setTimeout(() => { console.error('idle.mjs: timed out'); process.exit(2); },
                           Number(args['timeout-s']) * 1000);
  const stats = { failed: 0, closed_early: 0 };
  const rss_before_kb = rss_kb(pids);
  const sockets = await open_all(args, request, stats);
  await sleep(1000);
  const rss_after_kb = rss_kb(pids);
  const open = sockets.length - stats.closed_early;
  const kb_per_conn = open > 0 ? (rss_after_kb - rss_before_kb) / open : null;
  console.log(JSON.stringify({ open, failed: stats.failed, closed_early: stats.closed_early,
                               rss_before_kb, rss_after_kb, kb_per_conn, last_error: stats.last_error }));
  clearTimeout(timer);
  for (const s of sockets) s.destroy();
  process.exitCode = stats.failed || stats.closed_early ? 1 : 0;
}

main().catch((e) => { console.error(`idle.mjs: ${e.message}`); process.exit(2); });
