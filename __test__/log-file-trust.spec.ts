/**
 * Files the master opens are never opened through a link or node a worker's user could
 * have placed (`crates/baton-core/src/log_sink.rs`, `open_checked`). A worker running as
 * "nobody", whose log file sits in a directory it owns, replaces that file with a symlink,
 * a FIFO, a hard link, or its directory with a symlink, then the admin runs
 * `baton reopen-logs` (what logrotate's postrotate does): the root-only target stays
 * byte-identical, the master logs a refusal naming the path and the rule, the refused
 * sink keeps writing to the file it had open, and the fleet keeps serving and relaying
 * the other groups' output. Needs root (CI runs as root).
 */
import test, { type ExecutionContext } from 'ava'
import { chmodSync, chownSync, linkSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, tmpDir, waitFor } from './helpers/processes.js'
import { nobody } from '../harness/proc.mjs'

const asRoot = process.getuid?.() === 0 ? test : test.skip

type Kind = 'symlink' | 'fifo' | 'hardlink' | 'dir'

const SECRET = 'root only: must never change\n'

async function attack(t: ExecutionContext, kind: Kind): Promise<void> {
  const who = nobody()
  const dir = await tmpDir('baton-logtrust-')
  t.teardown(() => dir.cleanup())
  chmodSync(dir.path, 0o755) // nobody must reach its app dir
  const app = join(dir.path, 'app')
  const logs = join(app, 'logs')
  mkdirSync(logs, { recursive: true })
  for (const d of [app, logs]) chownSync(d, who.uid, who.gid)
  // Root-only files: the attack's targets.
  const rootOnly = join(dir.path, 'root-only')
  mkdirSync(rootOnly, { mode: 0o700 })
  const secret = join(rootOnly, kind === 'dir' ? 'out.log' : 'secret')
  writeFileSync(secret, SECRET, { mode: 0o600 })
  const file = join(logs, 'out.log')
  const other = join(dir.path, 'other.log')
  const [port, otherPort] = [await freePort(), await freePort()]
  writeFileSync(
    join(dir.path, 'baton.config.json'),
    JSON.stringify({
      name: 'fleet',
      groups: {
        web: {
          script: fixture('log-attacker.mjs'),
          count: 1,
          uid: 'nobody',
          listen: `127.0.0.1:${port}`,
          stdout: file,
        },
        other: { script: fixture('log-attacker.mjs'), count: 1, listen: `127.0.0.1:${otherPort}`, stdout: other },
      },
    }),
  )
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2 })
  const say = async (p: number, text: string) =>
    t.is((await httpGet({ port: p, path: `/say?text=${text}` })).status, 200)
  await say(port, 'before')
  await waitFor(() => readFileSync(file, 'utf8').includes('before\n'), { message: 'first line in out.log' })

  // The worker itself (uid nobody) makes the swap.
  const target = kind === 'dir' ? rootOnly : secret
  const q = new URLSearchParams({ kind, file, target })
  const swap = await httpGet({ port, path: `/swap?${q.toString()}` })
  if (kind === 'hardlink' && swap.status === 409 && ['EPERM', 'EACCES'].includes(swap.body)) {
    // nobody cannot reach into root-only/, and fs.protected_hardlinks=1 would stop it
    // linking root's file anyway; root plants the link instead, standing for a file
    // nobody could link (a root-owned file in a directory it may search, on a kernel
    // without that protection).
    linkSync(secret, file)
  } else {
    t.is(swap.status, 200, swap.body)
  }

  const reopened = await fleet.cli(['reopen-logs', fleet.name])
  t.not(reopened.code, 0, 'reopen-logs reports the refusal')
  t.true(reopened.stderr.includes(file), reopened.stderr)
  const rule = {
    symlink: 'is a symbolic link',
    fifo: 'is a FIFO',
    hardlink: 'has 2 hard links',
    dir: 'logs is a symbolic link',
  }[kind]
  await waitFor(() => fleet.log.text.includes(`cannot open ${file}: refused: `) && fleet.log.text.includes(rule), {
    message: `the master logs the refusal; log:\n${fleet.log.text}`,
  })
  t.regex(fleet.log.text, /may write; .*(only|regular)/)
  t.regex(fleet.log.text, /keeps going to the file opened before/)

  // The worker's next lines: into the file the sink had open, never into the target.
  await say(port, 'INJECTED-by-nobody')
  const old = kind === 'dir' ? join(`${logs}.old`, 'out.log') : `${file}.old`
  await waitFor(() => readFileSync(old, 'utf8').includes('INJECTED-by-nobody\n'), {
    message: 'the refused sink keeps its old file',
  })
  t.is(readFileSync(secret, 'utf8'), SECRET, 'the root-only file is byte-identical')
  // The fleet keeps serving and relaying the other groups' output.
  await say(otherPort, 'other-after')
  await waitFor(() => readFileSync(other, 'utf8').includes('other-after\n'), { message: 'other group still relayed' })
  t.is((await httpGet({ port, path: '/' })).status, 200)
  const status = await fleet.status()
  t.true(status.workers.every((w) => w.state === 'ready'))
}

asRoot('(a) out.log replaced by a symlink to a root-only file: reopen-logs refuses it, the target is unchanged', (t) =>
  attack(t, 'symlink'),
)
asRoot('(b) out.log replaced by a FIFO held open and never read: refused, the relay keeps going', (t) =>
  attack(t, 'fifo'),
)
asRoot('(c) out.log replaced by a hard link to a root-only file: refused, the target is unchanged', (t) =>
  attack(t, 'hardlink'),
)
asRoot('(d) logs/ replaced by a symlink to a root-only directory: refused, the target is unchanged', (t) =>
  attack(t, 'dir'),
)
