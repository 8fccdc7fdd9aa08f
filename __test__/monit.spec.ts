/**
 * `baton monit`: driven in a real terminal (a tmux pane of 80x24, send-keys and
 * capture-pane) against a real fleet, and through a pipe (the plain table).
 */
import test, { type ExecutionContext } from 'ava'
import { execFile, spawn, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BATON, fixture, startFleet, type Fleet } from './helpers/fleet.js'
import { freePort, OutputBuffer, tmpDir, waitFor, waitForExit } from './helpers/processes.js'
import { renderMonit } from '../src/cli/monit.js'
import type { Status } from '../src/types.js'

const run = promisify(execFile)

/** The terminal tests need tmux (Debian/Ubuntu: apt-get install tmux). */
// CI installs tmux (`node scripts/ci-tools.mjs tmux` in .ci/run): without it these tests
// fail, saying so, rather than skip.
const hasTmux = spawnSync('tmux', ['-V']).status === 0

if (!hasTmux)
  test('baton monit in a terminal needs tmux', (t) =>
    t.fail('tmux is not installed: run `node scripts/ci-tools.mjs tmux`'))

/** A tmux server of its own (its own socket in a temp dir), killed and removed by the teardown. */
async function tmux(t: ExecutionContext, env: Record<string, string>) {
  const dir = await tmpDir('baton-tmux-')
  const socket = join(dir.path, 'tmux.sock')
  const tm = async (...args: string[]): Promise<string> =>
    (await run('tmux', ['-S', socket, '-f', '/dev/null', ...args], { env: { ...process.env, ...env } })).stdout
  t.teardown(async () => {
    await tm('kill-server').catch(() => undefined)
    await dir.cleanup()
  })
  // A plain shell, so its prompt and screen are known.
  await tm('new-session', '-d', '-x', '80', '-y', '24', '-s', 'm', 'env', 'PS1=$ ', 'bash', '--norc', '--noprofile')
  return {
    tm,
    keys: (...keys: string[]) => tm('send-keys', '-t', 'm', ...keys),
    pane: () => tm('capture-pane', '-p', '-t', 'm'),
    /** `#{alternate_on}`: 1 while the program in the pane uses the alternate screen. */
    alternate: async () => (await tm('display-message', '-p', '-t', 'm', '#{alternate_on}')).trim(),
    title: async () => (await tm('display-message', '-p', '-t', 'm', '#{pane_title}')).trim(),
  }
}

/** A fleet of two groups: web (2 slow-to-start workers of the test app) and esc (a worker that writes terminal escapes). */
async function twoGroups(t: ExecutionContext): Promise<{ fleet: Fleet; webPort: number }> {
  const dir = await tmpDir('baton-monit-')
  t.teardown(() => dir.cleanup())
  const [webPort, escPort] = [await freePort(), await freePort()]
  const config = {
    name: 'shop',
    groups: {
      // Each new worker takes 700 ms to listen, so a reload's progress stays on screen.
      web: { script: fixture('app.mjs'), count: 2, listen: `127.0.0.1:${webPort}`, env: { BOOT_DELAY_MS: '700' } },
      esc: { script: fixture('escapes.mjs'), count: 1, listen: `127.0.0.1:${escPort}` },
    },
  }
  writeFileSync(join(dir.path, 'baton.config.mjs'), `export default ${JSON.stringify(config)}\n`)
  const fleet = await startFleet(t, { cwd: dir.path, name: 'shop', expectWorkers: 3 })
  return { fleet, webPort }
}

test('baton monit in an 80x24 tmux pane: every worker, a reload started with r shows its progress then the new pids, tab and + scale the selected group, q exits 0 and restores the terminal', async (t) => {
  const { fleet } = await twoGroups(t)
  const before = await fleet.status()
  const term = await tmux(t, { BATON_RUNTIME_DIR: fleet.runtimeDir })
  await term.keys('echo prior-screen-marker', 'Enter')
  await waitFor(async () => (await term.pane()).includes('prior-screen-marker\n$'), { message: 'the shell ran echo' })
  await term.keys(`${process.execPath} ${BATON} monit shop; echo "monit-exit=$?"; stty -a`, 'Enter')

  // Every worker, with its pid, group, state and generation, in the 80x24 view.
  const row = (pane: string, group: string, id: number, pid: number | null, gen: number) =>
    new RegExp(`^${group} +${id} +${pid} +ready +${gen} `, 'm').test(pane)
  await waitFor(
    async () => {
      const pane = await term.pane()
      return before.workers.every((w) => row(pane, w.group, w.id, w.pid, 1)) && pane.includes('-- latest log lines')
    },
    { message: `every worker shown; pane:\n${await term.pane()}` },
  )
  t.is(await term.alternate(), '1', 'the view is on the alternate screen')
  let pane = await term.pane()
  t.false(pane.includes('prior-screen-marker'), pane)
  t.regex(pane, /GROUP +ID +PID +STATE +GEN +CPU +MEM +CONN +RST +UPTIME/)
  t.regex(pane, /r reload {2}\+\/- scale group/)
  t.true(pane.trimEnd().split('\n').length <= 24)
  // The escapes a worker wrote are shown as text: no title set, no screen cleared.
  await waitFor(
    async () => (await term.pane()).includes('esc#0 out | hello \\x1b]0;pwned\\x07\\x1b[2J\\u009b31m end'),
    {
      message: `the escape worker's line shown visibly; pane:\n${await term.pane()}`,
    },
  )
  t.not(await term.title(), 'pwned')

  // r: the reload's progress while it runs, then the new pids.
  await term.keys('r')
  await waitFor(async () => /RELOADING to generation 2: [01]\/3 replaced/.test(await term.pane()), {
    intervalMs: 10,
    message: `reload progress shown; pane:\n${await term.pane()}`,
  })
  await waitFor(async () => /reload done: reload 2 done/.test(await term.pane()), {
    timeoutMs: 20_000,
    message: `reload outcome shown; pane:\n${await term.pane()}`,
  })
  const reloaded = await fleet.status()
  t.is(reloaded.generation, 2)
  await waitFor(
    async () => {
      const p = await term.pane()
      return reloaded.workers.every((w) => row(p, w.group, w.id, w.pid, 2))
    },
    { message: `new pids shown; pane:\n${await term.pane()}` },
  )
  for (const w of before.workers) t.false(new RegExp(`\\b${w.pid}\\b`).test(await term.pane()), `old pid ${w.pid} gone`)

  // tab selects the next group (esc); + scales it by one worker.
  await term.keys('Tab')
  await waitFor(async () => (await term.pane()).includes('[esc 1/1]'), { message: 'esc selected' })
  await term.keys('+')
  await waitFor(async () => /scaled esc to 2 workers, all ready/.test(await term.pane()), {
    timeoutMs: 20_000,
    message: `scale shown; pane:\n${await term.pane()}`,
  })
  await waitFor(async () => /^esc +1 +\d+ +ready/m.test(await term.pane()), { message: 'the new worker listed' })
  const scaled = await fleet.status()
  t.is(scaled.groups.find((g) => g.name === 'esc')?.count, 2)
  t.is(scaled.groups.find((g) => g.name === 'web')?.count, 2, 'the unselected group is left alone')
  // - scales it back.
  await term.keys('-')
  await waitFor(async () => (await fleet.status()).workers.filter((w) => w.group === 'esc').length === 1, {
    message: 'esc back to 1 worker',
  })

  // q: exit 0, the shell's screen is back, the terminal is out of raw mode.
  await term.keys('q')
  await waitFor(async () => /monit-exit=\d+/.test(await term.pane()), { message: 'monit exited' })
  pane = await term.pane()
  t.regex(pane, /monit-exit=0\n/)
  t.true(pane.includes('prior-screen-marker'), `the shell's screen is back:\n${pane}`)
  t.is(await term.alternate(), '0')
  await waitFor(async () => / icanon /.test(` ${(await term.pane()).replace(/\n/g, ' ')} `), { message: 'stty ran' })
  pane = (await term.pane()).replace(/\n/g, ' ')
  t.regex(pane, /(^|\s)icanon(\s|$)/, 'canonical mode back (raw mode off)')
  t.regex(pane, /(^|\s)echo(\s|$)/, 'echo back')
  t.false(/-icanon|(^|\s)-echo(\s|$)/.test(pane), pane)
})

test('baton monit restores the terminal on Ctrl-C and on SIGTERM', async (t) => {
  const { fleet } = await twoGroups(t)
  const term = await tmux(t, { BATON_RUNTIME_DIR: fleet.runtimeDir })
  for (const how of ['ctrl-c', 'sigterm'] as const) {
    await term.keys('clear', 'Enter')
    await term.keys(
      `echo marker-${how}; ${process.execPath} ${BATON} monit shop; echo "exit-${how}=$?"; stty -a`,
      'Enter',
    )
    await waitFor(async () => (await term.alternate()) === '1' && (await term.pane()).includes('-- latest log lines'), {
      message: `monit drawn (${how})`,
    })
    if (how === 'ctrl-c') await term.keys('C-c')
    else {
      const pid = (await term.tm('display-message', '-p', '-t', 'm', '#{pane_pid}')).trim()
      // The monit process: the pane shell's child running bin/baton.js.
      const { stdout } = await run('pgrep', ['-P', pid, '-f', 'baton.js monit'])
      process.kill(Number(stdout.trim().split('\n')[0]), 'SIGTERM')
    }
    await waitFor(async () => new RegExp(`exit-${how}=\\d+`).test(await term.pane()), {
      message: `monit exited on ${how}`,
    })
    const pane = await term.pane()
    t.regex(pane, new RegExp(`exit-${how}=${how === 'ctrl-c' ? 130 : 143}`), pane)
    t.true(pane.includes(`marker-${how}`), pane)
    t.is(await term.alternate(), '0')
    await waitFor(async () => / icanon /.test((await term.pane()).replace(/\n/g, ' ')), { message: 'stty ran' })
    t.false(/-icanon|\s-echo\s/.test((await term.pane()).replace(/\n/g, ' ')))
  }
})

test('baton monit shows a baton upgrade while it runs (the new master and its workers starting), then the master it replaced and the new workers', async (t) => {
  const { fleet } = await twoGroups(t)
  const before = await fleet.status()
  const term = await tmux(t, { BATON_RUNTIME_DIR: fleet.runtimeDir })
  await term.keys(`${process.execPath} ${BATON} monit shop --interval 200`, 'Enter')
  await waitFor(async () => (await term.pane()).includes('-- latest log lines'), { message: 'monit drawn' })
  const upgrade = fleet.cli(['upgrade', 'shop'])
  await waitFor(
    async () => /UPGRADING: new master pid \d+ started, \d+ of its workers running/.test(await term.pane()),
    {
      intervalMs: 10,
      timeoutMs: 20_000,
      message: `upgrade progress shown; pane:\n${await term.pane()}`,
    },
  )
  const done = await upgrade
  t.is(done.code, 0, done.stderr)
  const after = await fleet.status()
  t.not(after.pid, before.pid)
  await waitFor(
    async () => {
      const p = await term.pane()
      return (
        p.includes(`master replaced (baton upgrade): pid ${before.pid} -> ${after.pid}`) &&
        after.workers.every((w) => new RegExp(`^${w.group} +${w.id} +${w.pid} +ready`, 'm').test(p)) &&
        !p.includes('UPGRADING')
      )
    },
    { message: `the new master and workers shown; pane:\n${await term.pane()}` },
  )
  await term.keys('q')
  await waitFor(async () => (await term.alternate()) === '0', { message: 'monit left the alternate screen' })
})

test('baton monit NAME | head: a plain table without escapes, every worker; the closed pipe ends it', async (t) => {
  const { fleet } = await twoGroups(t)
  const status = await fleet.status()
  // 12 lines: two tables of 6 (header, columns, 3 workers, a blank line).
  const child = spawn(
    'bash',
    ['-c', `"${process.execPath}" "${BATON}" monit shop | head -n 12; echo "rc=\${PIPESTATUS[0]}"`],
    {
      env: { ...process.env, BATON_RUNTIME_DIR: fleet.runtimeDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  const out = new OutputBuffer().follow(child.stdout)
  const err = new OutputBuffer().follow(child.stderr)
  const exit = await waitForExit(child)
  t.is(exit.code, 0, err.text)
  t.false(out.text.includes('\x1b'), 'no escape in the plain output')
  t.regex(out.text, /^baton "shop" {2}master \d+/)
  t.regex(out.text, /GROUP +ID +PID +STATE +GEN +CPU +MEM +CONN +RST +UPTIME/)
  for (const w of status.workers) t.regex(out.text, new RegExp(`^${w.group} +${w.id} +${w.pid} +ready +1 `, 'm'))
  // Refreshed: the table twice.
  t.is(out.text.match(/^baton "shop"/gm)?.length, 2, out.text)
  t.regex(out.text, /rc=0/, 'monit ended with 0 once head closed the pipe')
})

test('the monit screen is exactly the terminal size: 30 workers in 80x24 (the rest counted), a 40x8 terminal, long names cut', (t) => {
  const worker = (i: number) => ({
    group: i < 20 ? 'web' : 'a-very-long-group-name-that-does-not-fit',
    id: i,
    pid: 100000 + i,
    generation: 3,
    state: 'ready' as const,
    restarts: 0,
    rssBytes: 50 * 1024 * 1024,
    startedAt: new Date(Date.now() - 90_000).toISOString(),
    lastExit: null,
    restartInMs: null,
    connections: i,
    cpu: 12.5,
  })
  const status = {
    name: 'big',
    pid: 99999,
    generation: 3,
    reloading: false,
    stopping: false,
    groups: [
      { name: 'web', count: 20 },
      { name: 'a-very-long-group-name-that-does-not-fit', count: 10 },
    ],
    workers: Array.from({ length: 30 }, (_, i) => worker(i)),
  } as unknown as Status
  const view = {
    status,
    selected: 1,
    activity: { line: '', busy: false },
    logs: Array.from({ length: 50 }, (_, i) => `web#0 out | line ${i} ${'x'.repeat(100)}`),
    now: Date.now(),
  }
  const plainWidth = (l: string) => [...l.replace(/\x1b\[[0-9;]*m/g, '')].length
  for (const [cols, rows] of [
    [80, 24],
    [40, 8],
    [120, 50],
  ] as const) {
    const lines = renderMonit(view, cols, rows)
    t.is(lines.length, rows, `${cols}x${rows}`)
    for (const l of lines) t.true(plainWidth(l) <= cols, `${cols}x${rows}: ${l}`)
  }
  const screen = renderMonit(view, 80, 24).join('\n')
  t.regex(screen, /\.\.\. \d+ more workers/)
  t.regex(screen, /web +0 100000 ready +3 12\.5% 50\.0M +0 +0 +1m30s/)
  t.regex(screen, /line 49/, 'the latest log line is shown')
  t.regex(renderMonit(view, 120, 50).join('\n'), /a-very-long-gro~ +29 100029/)
})
