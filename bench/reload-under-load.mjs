#!/usr/bin/env node
/**
 * Reload under load, head to head with the anchors (docs/benchmarks.md,
 * /work/shared/reference/anchors-measured.md): same app, same load, same trigger.
 *
 * - app: node:http, sha256 of 1 KiB per request, 300 ms boot delay, version read at start;
 *   textbook under baton (no drain code: it only calls `worker.listen(server)`);
 * - fleet: `baton start app.mjs --count N --listen 127.0.0.1:PORT --order O` (the CLI, in
 *   the foreground, in its own BATON_RUNTIME_DIR), N = 2 and 4, start-first and stop-first;
 * - load: `wrk -t1 -c64 -d12s --timeout 2s --latency` (or the node load generator, with a
 *   note, when wrk is missing) plus a probe: a fresh-connection GET every ~10 ms;
 * - 3 s in: version.txt is changed and `baton reload bench` runs (its wall time is the
 *   reload time, like `pm2 reload` in the anchors; the core's own figure is kept too);
 * - after: all pids replaced? 20 fresh GETs: new version served?
 * - bad deploy: the new version throws at boot; 4 workers; errors during the aborted
 *   reload and whether the service stayed up (same pids, old version served).
 *
 * Usage: node bench/reload-under-load.mjs [--reps 3] [--duration 12] [--counts 2,4]
 *          [--orders start-first,stop-first] [--balance shared,reuseport] [--bad-balance shared] [--no-bad] [--quick]
 *        node bench/reload-under-load.mjs --render bench/results/reload-under-load.json  (re-print a saved run)
 * Writes bench/results/reload-under-load.json and prints a markdown table.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

import {
  args,
  cleanup,
  cpuBusy,
  cpuSnapshot,
  fmt,
  foreignCpuSeconds,
  freePort,
  installCleanup,
  loadToWrkShape,
  machine,
  mmm,
  setVersion,
  spreadOf,
  sleep,
  startCliFleet,
  startNodeLoad,
  startProbe,
  startWrk,
  stats,
  tempDir,
  versionsServed,
  waitQuiet,
  writeBenchApp,
  writeResult,
  wrkVersion,
} from './lib/util.mjs';

const opt = args();
const quick = opt.quick === true;
const REPS = Number(opt.reps ?? (quick ? 1 : 3));
const DURATION = Number(opt.duration ?? (quick ? 8 : 12));
const TRIGGER_S = 3;
const COUNTS = String(opt.counts ?? '2,4').split(',').map(Number);
const ORDERS = String(opt.orders ?? 'start-first,stop-first').split(',');
const BAD = opt['no-bad'] !== true;
// Balance modes of the good-reload cases (bad deploys use the default, shared).
const BALANCES = String(opt.balance ?? 'shared').split(',');
const BAD_BALANCES = String(opt['bad-balance'] ?? 'shared').split(',');
const BAD_ORDERS = String(opt['bad-orders'] ?? 'start-first,stop-first').split(',');
const QUIET_LIMIT = Number(opt['quiet-limit'] ?? 20);
const QUIET_WAIT_MS = Number(opt['quiet-wait'] ?? 8) * 1000;
// A run during which other processes used more than this many CPU-seconds is re-run
// (up to RETRIES times; the least contaminated run is kept), as in the anchors.
const CONTAMINATED_S = Number(opt['contaminated-cpu-s'] ?? 1);
const RETRIES = Number(opt.retries ?? 1);
const log = (s) => process.stderr.write(`${s}\n`);

const HAVE_WRK = wrkVersion() !== null;

async function runOnce(workDir, { count, order, bad, rep, balance = 'shared' }) {
  const appDir = path.join(workDir, `app-${count}-${order}-${balance}-${bad ? 'bad' : 'good'}-${rep}`);
  const oldVersion = `v${rep}-old`;
  const newVersion = bad ? `throw-v${rep}` : `v${rep}-new`;
  const script = writeBenchApp(appDir, oldVersion);
  const port = await freePort();
  const flags = balance === 'shared' ? [] : ['--balance', balance];
  const fleet = await startCliFleet({ script, count, port, order, name: 'bench', flags });
  try {
    const before = await fleet.status();
    const oldPids = before.workers.map((w) => w.pid);
    await sleep(300);
    const busyBeforePct = await waitQuiet(QUIET_LIMIT, QUIET_WAIT_MS);

    const snapA = cpuSnapshot([process.pid, fleet.master.pid], oldPids);
    const load = HAVE_WRK ? startWrk(port, { connections: 64, durationS: DURATION }) : startNodeLoad(port, { connections: 64, durationS: DURATION });
    const probe = startProbe(port, 10);
    const loadT0 = performance.now();
    await sleep(TRIGGER_S * 1000 - 500);
    const spreadBefore = spreadOf(port, oldPids);
    await sleep(500);

    setVersion(appDir, newVersion);
    const reload = await fleet.cli(['reload', 'bench']);
    const reloadAtS = (performance.now() - loadT0) / 1000;
    // How wrk's keep-alive connections are spread over the workers near the end of the run.
    const untilLate = (DURATION - 1.5) * 1000 - (performance.now() - loadT0);
    if (untilLate > 0) await sleep(untilLate);
    const latePids = (await fleet.status()).workers.map((x) => x.pid).filter(Boolean);
    const spreadAfter = spreadOf(port, latePids);

    const loadRaw = await load.done;
    const after = await fleet.status();
    const newPids = after.workers.map((w) => w.pid);
    const snapB = cpuSnapshot([process.pid, fleet.master.pid], newPids);
    const probeResult = await probe.stop();
    const served = await versionsServed(port, 20);
    const w = HAVE_WRK ? loadRaw : loadToWrkShape(loadRaw, DURATION);
    const replacedAll = newPids.length === count && newPids.every((p) => p && !oldPids.includes(p));
    const keptAll = newPids.length === count && newPids.every((p) => oldPids.includes(p));
    const readyAfter = after.workers.filter((x) => x.state === 'ready').length;
    const lastReload = after.lastReload;
    return {
      count,
      order,
      balance,
      bad,
      rep,
      spread: { before: spreadBefore, after: spreadAfter },
      busyBeforePct,
      foreignCpuS: foreignCpuSeconds(snapA, snapB),
      reload: {
        cliExit: reload.code,
        wallMs: Math.round(reload.ms),
        coreMs: lastReload?.durationMs ?? null,
        outcome: lastReload?.outcome ?? null,
        failureReason: lastReload?.failure?.reason ?? null,
        cliOutput: reload.stdout.trim().split('\n').slice(-3).join(' | '),
        cliStderr: reload.stderr.trim().split('\n').slice(-3).join(' | '),
        finishedAtS: Math.round(reloadAtS * 10) / 10,
      },
      load: {
        tool: HAVE_WRK ? 'wrk' : 'node',
        requests: w.requests,
        rps: w.rps,
        socketErrors: w.socketErrors,
        errors: w.errors,
        non2xx: w.non2xx,
        p99: w.p99,
        ...(HAVE_WRK ? {} : { firstErrors: loadRaw.firstErrors }),
      },
      probe: probeResult,
      pids: { before: oldPids, after: newPids, replacedAll, keptAll, readyAfter },
      served: { versions: served.versions, failed: served.failed, expected: bad ? oldVersion : newVersion, expectedCount: served.versions[bad ? oldVersion : newVersion] ?? 0 },
      masterLogTail: fleet.log().trim().split('\n').slice(-8),
    };
  } finally {
    await fleet.dispose();
  }
}

function sameCase(r, c) {
  return r.count === c.count && r.order === c.order && r.bad === c.bad && (r.balance ?? 'shared') === (c.balance ?? 'shared');
}

function caseLabel(c) {
  const balance = (c.balance ?? 'shared') === 'shared' ? '' : `, balance ${c.balance}`;
  return c.bad ? `baton ${c.count} workers, ${c.order}${balance}, BAD deploy (throws at boot)` : `baton ${c.count} workers, ${c.order}${balance}`;
}

function spreadText(r) {
  const f = (a) => (a ? a.join('+') : '?');
  return `${f(r.spread?.before)} → ${f(r.spread?.after)}`;
}

function errorSplit(e) {
  if (!e) return '–';
  if ('connect' in e) return `${e.connect} / ${e.read} / ${e.write} / ${e.timeout}`;
  return Object.entries(e).map(([k, v]) => `${k}×${v}`).join(', ') || '0';
}

function row(label, runs) {
  const wrk = runs[0].load.tool === 'wrk';
  const s = (f) => stats(runs.map(f));
  const med = (f) => s(f).median;
  const errSplitMed = wrk
    ? `${fmt(med((r) => r.load.errors.connect))} / ${fmt(med((r) => r.load.errors.read))} / ${fmt(med((r) => r.load.errors.write))} / ${fmt(med((r) => r.load.errors.timeout))}`
    : runs.map((r) => errorSplit(r.load.errors)).join('; ');
  const probe = `${mmm(s((r) => r.probe.failed))}${runs.some((r) => r.probe.failed) ? ` (${runs.map((r) => Object.entries(r.probe.codes).map(([k, v]) => `${k}×${v}`).join(',')).filter(Boolean).join('; ')})` : ''}`;
  const bad = runs[0].bad;
  const pids = bad
    ? runs.map((r) => (r.pids.keptAll ? 'kept' : `changed (${r.pids.readyAfter}/${r.count} ready)`)).join(', ')
    : runs.every((r) => r.pids.replacedAll) ? 'yes' : runs.map((r) => (r.pids.replacedAll ? 'yes' : 'NO')).join(', ');
  const served = runs.map((r) => `${r.served.expectedCount}/20`).join(', ');
  const outcome = runs.map((r) => `${r.reload.outcome ?? '?'}${r.reload.cliExit === (bad ? 1 : 0) ? '' : ` (exit ${r.reload.cliExit})`}`).join(', ');
  return `| ${label} | ${mmm(s((r) => r.reload.wallMs))} | ${mmm(s((r) => r.reload.coreMs))} | ${mmm(s((r) => r.load.socketErrors))} | ${errSplitMed} | ${mmm(s((r) => r.load.non2xx))} | ${mmm(s((r) => r.load.requests))} | ${mmm(s((r) => r.load.p99), 1)} | ${probe} | ${mmm(s((r) => r.probe.outageMs))} | ${runs.map(spreadText).join(', ')} | ${outcome} | ${pids} | ${served} | ${mmm(s((r) => r.foreignCpuS), 2)} |`;
}

/** The markdown report of `runs` (also: `--render results.json` re-renders a saved run). */
function render(runs, { loadDesc, cases }) {
  const reps = Math.max(...runs.map((r) => r.rep));
  const out = [];
  out.push(`## Reload under load (${loadDesc}; reload ${TRIGGER_S} s in; ${reps} reps per case)`);
  out.push('');
  out.push('Values are min / median / max over the reps. reload ms = wall time of `baton reload` (CLI, like `pm2 reload` in the anchors); core ms = the reload\'s own duration (`lastReload.durationMs`). Socket errors = wrk connect + read + write + timeout. Probe = a fresh-connection GET every ~10 ms; outage = longest run of failed probes. Conns per worker: \`ss -tnp\` 0.5 s before the reload and 1.5 s before the end of the run. Foreign CPU = CPU-seconds used by processes outside the benchmark during the run (2 cores = 2 CPU-s per s).');
  out.push('');
  out.push('| case | reload ms | core ms | socket errors | connect / read / write / timeout (median) | non-2xx | requests | p99 ms | probe fails | outage ms | wrk conns per worker, before → after the reload (each rep) | outcome | all pids replaced | new version after (fresh GETs) | foreign CPU-s |');
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const c of cases) {
    const rs = runs.filter((r) => sameCase(r, c));
    const label = caseLabel(c);
    let line = row(label, rs);
    if (c.bad) {
      // For a bad deploy: "all pids replaced" → pids kept; "new version" → old version still served.
      line = line.replace(/\| ([^|]*) \| ([^|]*) \| ([^|]*) \|$/, (_m, pids, served, foreign) => `| ${pids} | old version: ${served} | ${foreign} |`);
    }
    out.push(line);
  }
  out.push('');
  const bad = runs.filter((r) => r.bad);
  if (bad.length) {
    const reasons = [...new Set(bad.map((r) => r.reload.failureReason))].join('; ');
    out.push(`Bad deploy: the reload was aborted (${reasons}); \`baton reload\` exit codes: ${bad.map((r) => r.reload.cliExit).join(', ')}.`);
  }
  const discarded = runs.flatMap((r) => r.discarded ?? []);
  const sum = (xs, f) => xs.reduce((n, x) => n + (f(x) ?? 0), 0);
  out.push(
    `Runs re-run because other processes used > ${CONTAMINATED_S} CPU-s during the run: ${discarded.length}; kept runs still above the limit: ${runs.filter((r) => r.foreignCpuS > CONTAMINATED_S).length}. ` +
      `Failed requests over all ${runs.length + discarded.length} runs, re-run ones included: ${sum(runs, (r) => r.load.socketErrors) + sum(discarded, (d) => d.socketErrors)} socket errors, ` +
      `${sum(runs, (r) => r.load.non2xx) + sum(discarded, (d) => d.non2xx)} non-2xx, ${sum(runs, (r) => r.probe.failed) + sum(discarded, (d) => d.probeFailed)} failed probes.`,
  );
  const clean = runs.filter((r) => r.foreignCpuS !== null && r.foreignCpuS <= CONTAMINATED_S);
  if (clean.length && clean.length < runs.length) {
    out.push('');
    out.push(`Reload time over the uncontaminated runs only (other processes used ≤ ${CONTAMINATED_S} CPU-s):`);
    out.push('');
    out.push('| case | runs | reload ms (CLI) | core ms | requests | p99 ms |');
    out.push('|---|---|---|---|---|---|');
    for (const c of cases) {
      const rs = clean.filter((r) => sameCase(r, c));
      if (!rs.length) continue;
      const s2 = (f) => stats(rs.map(f));
      out.push(`| ${caseLabel(c)} | ${rs.length} | ${mmm(s2((r) => r.reload.wallMs))} | ${mmm(s2((r) => r.reload.coreMs))} | ${mmm(s2((r) => r.load.requests))} | ${mmm(s2((r) => r.load.p99), 1)} |`);
    }
  }
  return out.join('\n');
}

async function main() {
  installCleanup();
  if (typeof opt.render === 'string') {
    const saved = JSON.parse(readFileSync(opt.render, 'utf8'));
    const cases = [];
    for (const r of saved.runs) if (!cases.some((c) => sameCase(r, c))) cases.push({ count: r.count, order: r.order, balance: r.balance ?? 'shared', bad: r.bad });
    process.stdout.write(`${render(saved.runs, { loadDesc: saved.settings.load, cases })}\n`);
    return 0;
  }
  const workDir = tempDir('baton-rul-');
  const info = machine();
  const cases = [];
  for (const balance of BALANCES) for (const count of COUNTS) for (const order of ORDERS) cases.push({ count, order, balance, bad: false });
  if (BAD) for (const balance of BAD_BALANCES) for (const order of BAD_ORDERS) cases.push({ count: 4, order, balance, bad: true });
  const loadDesc = HAVE_WRK ? `wrk -t1 -c64 -d${DURATION}s --timeout 2s --latency` : `node bench/lib/load.mjs -c64 -d${DURATION}s (wrk not installed: figures are not comparable with the anchors' wrk figures)`;
  log(`reload under load: ${cases.length} cases × ${REPS} reps; load: ${loadDesc}; reload ${TRIGGER_S} s in`);

  const runs = [];
  // Interleaved: rep-major, so slow drift of the machine spreads over every case.
  for (let rep = 1; rep <= REPS; rep++) {
    for (const c of cases) {
      let r = await runOnce(workDir, { ...c, rep });
      r.discarded = [];
      for (let i = 0; i < RETRIES && r.foreignCpuS !== null && r.foreignCpuS > CONTAMINATED_S; i++) {
        log(`  (${caseLabel(c)} rep ${rep}: other processes used ${r.foreignCpuS} CPU-s during the run; re-running)`);
        const again = await runOnce(workDir, { ...c, rep });
        const [keep, drop] = again.foreignCpuS < r.foreignCpuS ? [again, r] : [r, again];
        keep.discarded = [...r.discarded, { foreignCpuS: drop.foreignCpuS, socketErrors: drop.load.socketErrors, non2xx: drop.load.non2xx, probeFailed: drop.probe.failed, reloadWallMs: drop.reload.wallMs, outcome: drop.reload.outcome }];
        r = keep;
      }
      runs.push(r);
      const errs = r.load.socketErrors + r.load.non2xx + r.probe.failed;
      log(
        `  ${caseLabel(c)} rep ${rep}: ${r.reload.outcome} in ${fmt(r.reload.wallMs)} ms (core ${fmt(r.reload.coreMs)}), ` +
          `${fmt(r.load.requests)} req, socket errors ${r.load.socketErrors} (${errorSplit(r.load.errors)}), non-2xx ${r.load.non2xx}, probe fails ${r.probe.failed}, ` +
          `${c.bad ? (r.pids.keptAll ? 'pids kept' : 'PIDS CHANGED') : r.pids.replacedAll ? 'all pids replaced' : 'NOT ALL PIDS REPLACED'}, served ${JSON.stringify(r.served.versions)}, conns per worker ${spreadText(r)}; busy before ${r.busyBeforePct}%, foreign CPU ${r.foreignCpuS} s${errs ? '  <-- ERRORS' : ''}`,
      );
    }
  }

  const text = render(runs, { loadDesc, cases });
  process.stdout.write(`${text}\n`);
  const file = writeResult(typeof opt.out === 'string' ? opt.out : quick ? 'reload-under-load.quick.json' : 'reload-under-load.json', {
    benchmark: 'reload-under-load',
    machine: info,
    settings: { reps: REPS, durationS: DURATION, triggerS: TRIGGER_S, counts: COUNTS, orders: ORDERS, balances: BALANCES, badDeploy: BAD, load: loadDesc, bootDelayMs: 300 },
    runs,
    markdown: text,
  });
  log(`wrote ${path.relative(process.cwd(), file)}`);
  return 0;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  process.stderr.write(`reload-under-load failed: ${e?.stack ?? e}\n`);
} finally {
  await cleanup();
}
process.exit(code);
