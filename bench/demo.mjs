#!/usr/bin/env node
/**
 * `npm run demo`: baton's point in ~15 seconds, no extra tools needed.
 *
 * 1. writes a small node:http app (answers with its version) into a temp dir,
 * 2. starts 4 workers of it with the Supervisor API on a free 127.0.0.1 port,
 * 3. puts 32 keep-alive connections of load on it (harness/load.mjs),
 * 4. deploys v2 (rewrites app.mjs) and reloads: workers are replaced one at a time,
 * 5. deploys a broken v3 (throws at start) and reloads: the reload is aborted, v2 keeps serving,
 * 6. prints what the clients saw. Exit 0 when no request failed, 1 otherwise.
 */
import { existsSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { startLoad } from '../harness/load.mjs'
import { BATON_URL, ROOT } from './lib/paths.mjs'
import { freePort, installCleanup, onCleanup, runMain, sleep, tempDir, trackPid } from './lib/processes.mjs'
import { versionsServed } from './lib/probe.mjs'
import { fmt } from './lib/stats.mjs'

const WORKERS = 4
const CONNECTIONS = 32
const LOAD_BEFORE_MS = 2000
const LOAD_BETWEEN_MS = 2000
const LOAD_AFTER_MS = 2000

const tty = process.stdout.isTTY && !process.env.NO_COLOR
const paint = (code) => (s) => (tty ? `\x1b[${code}m${s}\x1b[0m` : s)
const bold = paint('1')
const green = paint('32')
const red = paint('31')
const dim = paint('2')
const say = (line = '') => process.stdout.write(`${line}\n`)

function appSource(version, { broken = false } = {}) {
  return `// demo app ${version}, written by bench/demo.mjs
import http from 'node:http';
import { worker } from ${JSON.stringify(BATON_URL)}; // i.e. import { worker } from 'batonjs'
${broken ? "\n// v3's bug: reads a setting that is not there and throws at start.\nif (!process.env.PAYMENTS_URL) throw new Error('PAYMENTS_URL is not set');\n" : ''}
await new Promise((r) => setTimeout(r, 250)); // pretend to warm up (connect to a database...)

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end('${version} from pid ' + process.pid + '\\n');
});
await worker.listen(server); // the only baton-specific line
`
}

async function main() {
  installCleanup()
  if (!existsSync(new URL(BATON_URL))) {
    say(
      red(
        `baton is not built (${path.relative(ROOT, new URL(BATON_URL).pathname)} missing): run "npm run build" first.`,
      ),
    )
    return 1
  }
  const { Supervisor, ReloadError } = await import(BATON_URL)

  const dir = tempDir('baton-demo-')
  const script = path.join(dir, 'app.mjs')
  writeFileSync(script, appSource('v1'))

  say(bold('baton demo: deploy new code under load, without failing a single request'))
  const port = await freePort()
  const sup = new Supervisor({
    name: `demo-${process.pid}`,
    runtimeDir: path.join(dir, 'run'),
    log: false,
    handleSignals: false,
    groups: { web: { script, count: WORKERS, listen: `127.0.0.1:${port}` } },
  })
  sup.on('worker:spawn', (e) => trackPid(e.pid))
  onCleanup(() => sup.stop({ force: true }))
  let progress = []
  sup.on('reload:progress', (e) => progress.push(e.message))

  await sup.start()
  const pidsV1 = sup.status().workers.map((w) => w.pid)
  say(
    `${green('✓')} ${WORKERS} workers of ${dim(script)} up on http://127.0.0.1:${port} (pids ${pidsV1.join(', ')}), serving v1`,
  )

  const load = startLoad({ port, connections: CONNECTIONS })
  onCleanup(() => load.stop())
  say(
    `${green('✓')} load: ${CONNECTIONS} keep-alive connections, each sending its next request as soon as the last one is answered`,
  )
  await sleep(LOAD_BEFORE_MS)
  const line = (c) =>
    `${fmt(c.requests)} requests so far, ${c.errors + c.non2xx === 0 ? green('0 failed') : red(`${c.errors + c.non2xx} failed`)}`
  say(`  ${dim(line(load.counts()))}`)

  // --- a good deploy -------------------------------------------------------------------
  writeFileSync(script, appSource('v2'))
  say(`${bold('→')} deploy v2: app.mjs rewritten on disk, ${bold('sup.reload()')} replaces the workers one at a time`)
  const before = load.counts()
  let good
  try {
    good = await sup.reload()
  } catch (e) {
    good = e instanceof ReloadError ? e.report : { outcome: 'error', message: e.message, replaced: [], due: WORKERS }
  }
  for (const m of progress) say(`  ${dim(m)}`)
  progress = []
  const during = load.counts()
  const failedDuringReload = during.errors + during.non2xx - (before.errors + before.non2xx)
  if (good.outcome === 'done') {
    say(
      `${green('✓')} reload done in ${fmt(good.durationMs)} ms: ${good.replaced.length}/${good.due} workers replaced; ${fmt(during.requests - before.requests)} requests answered meanwhile, ${failedDuringReload === 0 ? green('0 failed') : red(`${failedDuringReload} failed`)}`,
    )
  } else {
    say(`${red('✗')} reload of v2 did not complete: ${good.message}`)
  }
  await sleep(LOAD_BETWEEN_MS)
  say(`  ${dim(line(load.counts()))}`)

  // --- a bad deploy ----------------------------------------------------------------------
  writeFileSync(script, appSource('v3', { broken: true }))
  const pidsV2 = sup.status().workers.map((w) => w.pid)
  say(
    `${bold('→')} deploy v3, which throws at start, and reload ${dim("(the crash's stack trace on stderr is expected)")}`,
  )
  let bad
  try {
    bad = await sup.reload()
  } catch (e) {
    bad = e instanceof ReloadError ? e.report : { outcome: 'error', message: e.message, replaced: [] }
  }
  const abortedAsExpected = bad.outcome === 'failed'
  const stderrLine = (bad.failure?.stderrTail ?? '')
    .split('\n')
    .map((l) => l.trim())
    .find((l) => /^\w*Error\b/.test(l))
  if (abortedAsExpected) {
    say(`${green('✓')} reload aborted, as it should: ${bad.failure?.group}#${bad.failure?.id} ${bad.failure?.reason}`)
    if (stderrLine) say(`  ${dim(`its stderr: ${stderrLine}`)}`)
  } else {
    say(`${red('✗')} the broken deploy was not stopped: outcome ${bad.outcome} (${bad.message})`)
  }
  await sleep(LOAD_AFTER_MS)
  const pidsAfter = sup.status().workers.map((w) => w.pid)
  const result = await load.stop()
  const end = await versionsServed(port, 20)
  const endVersions =
    Object.entries(end.versions)
      .map(([v, n]) => `${v} ×${n}`)
      .join(', ') || 'nothing'
  const keptV2 = pidsAfter.length === pidsV2.length && pidsAfter.every((p) => pidsV2.includes(p))
  say(`  ${dim(`workers after the bad deploy: ${keptV2 ? 'the same v2 pids' : 'changed'} (${pidsAfter.join(', ')})`)}`)

  // --- summary ---------------------------------------------------------------------------
  const failed = result.errors + result.non2xx
  const byVersion = Object.entries(result.bodies)
    .map(([v, n]) => `${v}: ${fmt(n)}`)
    .join(', ')
  const codes = Object.entries(result.errorCodes)
    .map(([c, n]) => `${c} ×${n}`)
    .join(', ')
  const ok = failed === 0 && good.outcome === 'done' && abortedAsExpected && end.failed === 0 && end.versions.v2 === 20
  say()
  say(bold('What the clients saw'))
  say(`  requests served     ${fmt(result.ok)} in ${(result.elapsedMs / 1000).toFixed(1)} s (${byVersion})`)
  say(`  failed requests     ${result.errors === 0 ? green('0') : red(`${result.errors} (${codes})`)}`)
  say(`  non-2xx responses   ${result.non2xx === 0 ? green('0') : red(String(result.non2xx))}`)
  say(`  p99 latency         ${fmt(result.latency.p99, 1)} ms`)
  say(bold('What baton did'))
  say(
    `  v1 → v2             ${good.outcome === 'done' ? `${good.replaced.length}/${good.due} workers replaced in ${fmt(good.durationMs)} ms, one at a time` : red(good.message)}`,
  )
  say(
    `  v2 → v3 (broken)    ${abortedAsExpected ? `aborted: ${bad.failure?.reason}${stderrLine ? ` (${stderrLine})` : ''}; v2 kept serving` : red(bad.message)}`,
  )
  say(`  served at the end   ${endVersions} (20 fresh requests)`)
  say()
  say(
    ok
      ? green(bold('Zero failed requests across two deploys.'))
      : red(bold(`Not clean: ${failed} failed requests${!abortedAsExpected ? ', bad deploy not aborted' : ''}.`)),
  )
  await sup.stop()
  return ok ? 0 : 1
}

await runMain('demo', main)
