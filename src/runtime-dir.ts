/**
 * What the CLI trusts in a runtime dir, and where it looks for masters.
 *
 * The runtime dir (`defaultRuntimeDir` below, the rule itself in
 * crates/baton-core/src/runtime_dir.rs) holds each master's control socket, pid file and
 * start record (`<name>.start.json`, the command line `baton restart` runs again and
 * `baton startup` writes into a unit). A CLI run as root that talked to a socket or ran a
 * record another user planted there would answer to, or run commands for, that user. So
 * before the CLI connects to a socket or reads a record or pid file, the directory and the
 * file are checked with `lstat` (a link is never followed): each must be of the expected
 * type, owned by the CLI's own effective uid, and not writable by group or others. A
 * refusal names the path, its owner and the rule, and says what to do.
 *
 * Without `BATON_RUNTIME_DIR` the CLI also looks where older versions kept fleets
 * (`$XDG_RUNTIME_DIR/baton`, `<tmpdir>/baton-<uid>`); one of those that fails the check is
 * skipped with a warning (a fleet of ours cannot be there: the master refuses such a dir).
 */
import { closeSync, constants, lstatSync, openSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { native } from './native.js'

/**
 * The default runtime dir: `BATON_RUNTIME_DIR`, else `/run/baton` for root, else
 * `~/.baton` (`<tmpdir>/baton-<uid>` when the home directory is unusable). The rule itself
 * is in the core (crates/baton-core/src/runtime_dir.rs), shared by the master and the CLI.
 */
export function defaultRuntimeDir(): string {
  return native().resolveRuntimeDir(
    process.env.BATON_RUNTIME_DIR || undefined,
    process.geteuid?.() ?? 0,
    process.env.HOME || undefined,
    tmpdir(),
  )
}

/** What a runtime-dir path is expected to be. */
export type RuntimeEntryKind = 'dir' | 'socket' | 'pid' | 'file'

/** A runtime dir or a file in it that the CLI refuses to trust; the message says why and what to do. */
export class UntrustedRuntimeError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'UntrustedRuntimeError'
  }
}

/** The CLI's effective uid (0 where there is none). */
function myUid(): number {
  return process.geteuid?.() ?? 0
}

/**
 * Check `path` before trusting it: true when it is there and trusted, false when nothing
 * is there; throws {@link UntrustedRuntimeError} otherwise.
 */
export function trustPath(path: string, kind: RuntimeEntryKind): boolean {
  try {
    return native().checkRuntimePath(path, kind, myUid())
  } catch (e) {
    throw new UntrustedRuntimeError((e as Error).message)
  }
}

/** Whether anything (even a dangling link) is at `path`, without following it. */
export function present(path: string): boolean {
  try {
    lstatSync(path)
    return true
  } catch {
    return false
  }
}

/**
 * Read a file of the runtime dir after {@link trustPath} (`kind` `file` or `pid`), opened
 * with `O_NOFOLLOW`; undefined when absent.
 */
export function readTrusted(path: string, kind: 'file' | 'pid'): string | undefined {
  if (!trustPath(path, kind)) return undefined
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  try {
    return readFileSync(fd, 'utf8')
  } finally {
    closeSync(fd)
  }
}

/**
 * The directories the CLI searches, the runtime dir first. With `BATON_RUNTIME_DIR` set,
 * only that one; else also the old places (`$XDG_RUNTIME_DIR/baton`,
 * `<tmpdir>/baton-<uid>`) that exist and pass the check; `warn` hears about those that
 * do not. The runtime dir itself is checked by the commands, which refuse it.
 */
export function searchDirs(warn: (line: string) => void): string[] {
  const primary = defaultRuntimeDir()
  if (process.env.BATON_RUNTIME_DIR) return [primary]
  const dirs = [primary]
  const legacy = native().legacyRuntimeDirs(process.env.XDG_RUNTIME_DIR || undefined, tmpdir(), process.getuid?.() ?? 0)
  for (const dir of legacy) {
    if (dirs.includes(dir)) continue
    try {
      if (trustPath(dir, 'dir')) dirs.push(dir)
    } catch (e) {
      warn(`baton: not looking for fleets of older versions in ${dir}: ${(e as Error).message}`)
    }
  }
  return dirs
}

/** The directory of `dirs` that holds master `name` (its socket, pid file or start record); the first one if none does. */
export function dirOfMaster(dirs: readonly string[], name: string): string {
  for (const dir of dirs) {
    if (['sock', 'pid', 'start.json'].some((ext) => present(join(dir, `${name}.${ext}`)))) return dir
  }
  return dirs[0] ?? defaultRuntimeDir()
}
