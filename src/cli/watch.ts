/**
 * Dev mode (`baton start app.js --watch [PATH...]`): file changes under the watched paths
 * trigger a graceful reload. Changes are collected for {@link WATCH_DEBOUNCE_MS} after
 * the last one (an editor's save is often several events), and a reload that is still
 * running when more changes come is followed by exactly one more.
 *
 * Only code counts: by default a change reloads only when the file has one of the
 * extensions Node loads ({@link SOURCE_EXTENSIONS}: JavaScript, TypeScript, JSON);
 * `node_modules`, dot folders and dot files are ignored; `--watch-ignore GLOB` (repeatable)
 * ignores more. The fleet's own outputs never count, whatever their name: the groups' log
 * files, the master's own log file, the files the master's stdout and stderr are
 * redirected to (`baton start app.mjs --watch > out.log`), and the runtime dir. Otherwise
 * every reload's log lines would trigger the next reload.
 */
import { existsSync, fstatSync, readlinkSync, statSync, watch, type FSWatcher } from 'node:fs'
import * as path from 'node:path'
import { relative, resolve, sep } from 'node:path'

/** Quiet time after the last change before the reload starts. */
export const WATCH_DEBOUNCE_MS = 300

/** The extensions of the files a Node app loads: a change to another file does not reload. */
export const SOURCE_EXTENSIONS: readonly string[] = [
  '.js',
  '.mjs',
  '.cjs',
  '.ts',
  '.mts',
  '.cts',
  '.jsx',
  '.tsx',
  '.json',
]

/** Whether a changed path (relative to its watched root) is ignored. */
export function isIgnored(relativePath: string): boolean {
  return relativePath
    .split(/[\\/]/)
    .some((part) => part === 'node_modules' || (part.startsWith('.') && part !== '.' && part !== '..'))
}

/** Whether a path has one of the {@link SOURCE_EXTENSIONS}. */
export function isSource(file: string): boolean {
  return SOURCE_EXTENSIONS.includes(path.extname(file).toLowerCase())
}

/**
 * A matcher for `--watch-ignore` globs (`*`, `**`, `?`, `[...]`, `{a,b}`), with Node's own
 * `path.matchesGlob` (in every Node baton supports, >= 20.19; still flagged experimental
 * there, so the first use prints one ExperimentalWarning). A path is ignored when a glob
 * matches it relative to the watched root or to the current directory, matches its base
 * name (`*.log`), or matches a folder above it (`tmp` ignores `tmp/a.js`).
 */
export function globMatcher(globs: readonly string[]): (paths: readonly string[]) => boolean {
  if (globs.length === 0) return () => false
  const matches = (path as { matchesGlob?: (p: string, g: string) => boolean }).matchesGlob
  if (typeof matches !== 'function') {
    throw new Error(
      `--watch-ignore needs Node's path.matchesGlob (Node >= 20.17), not in Node ${process.versions.node}`,
    )
  }
  return (paths) =>
    globs.some((g) =>
      paths.some((p) => p !== '' && (matches(p, g) || matches(path.basename(p), g) || matches(p, `${g}/**`))),
    )
}

/**
 * Where this process's stdout and stderr go, when they are files (a redirection, the
 * daemon's log): their paths (from /proc/self/fd on Linux) and their device and inode
 * numbers (every platform), so that their changes are never taken for code changes.
 */
export function ownOutputs(): { paths: string[]; inodes: string[] } {
  const paths: string[] = []
  const inodes: string[] = []
  for (const fd of [1, 2]) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`)
      if (path.isAbsolute(target)) paths.push(target.replace(/ \(deleted\)$/, ''))
    } catch {
      // no /proc (macOS) or a closed fd: the inode below still tells
    }
    try {
      const st = fstatSync(fd)
      if (st.isFile()) inodes.push(`${st.dev}:${st.ino}`)
    } catch {
      // closed
    }
  }
  return { paths, inodes }
}

/** What a watcher leaves out besides {@link isIgnored} and the extension rule. */
export interface WatchFilter {
  /** `--watch-ignore` globs. */
  ignore?: readonly string[]
  /**
   * The fleet's outputs now (log files, the runtime dir, ...): absolute paths of files,
   * or of directories whose whole content is left out. Called when a change comes (the
   * log targets may change with a reload of a config file).
   */
  outputs?: () => readonly string[]
  /** Device:inode of files to leave out (the master's redirected stdout and stderr). */
  inodes?: readonly string[]
  /** Every extension counts, not only {@link SOURCE_EXTENSIONS}. */
  allFiles?: boolean
}

/** Whether `full` (absolute) is one of `outputs` or inside one of them. */
function isOutput(full: string, outputs: readonly string[]): boolean {
  return outputs.some((o) => full === o || full.startsWith(o.endsWith(sep) ? o : `${o}${sep}`))
}

function inodeOf(full: string): string | undefined {
  try {
    const st = statSync(full)
    return `${st.dev}:${st.ino}`
  } catch {
    return undefined
  }
}

/** A running watcher. */
export interface Watcher {
  close(): void
}

/**
 * Watch `paths` (directories recursively, or single files) and call `onChanges` with the
 * changed paths (relative to the current directory, sorted) once they settle; `filter`
 * says what does not count (an ignored change does not delay a pending reload either).
 * Throws, naming the path, when one does not exist.
 */
export function watchPaths(
  paths: readonly string[],
  onChanges: (files: string[]) => void,
  debounceMs = WATCH_DEBOUNCE_MS,
  filter: WatchFilter = {},
): Watcher {
  const ignored = globMatcher(filter.ignore ?? [])
  const inodes = new Set(filter.inodes ?? [])
  // A file named on its own (`--watch config.yaml`) counts whatever its extension.
  const counts = (named: boolean, full: string, rel: string): boolean => {
    if (!filter.allFiles && !named && !isSource(full)) return false
    if (isOutput(full, filter.outputs?.() ?? [])) return false
    if (ignored([rel, relative(process.cwd(), full)])) return false
    if (inodes.size > 0) {
      const inode = inodeOf(full)
      if (inode !== undefined && inodes.has(inode)) return false
    }
    return true
  }
  const watchers: FSWatcher[] = []
  const pending = new Set<string>()
  let timer: NodeJS.Timeout | undefined
  const flush = (): void => {
    timer = undefined
    const files = [...pending].sort()
    pending.clear()
    if (files.length > 0) onChanges(files)
  }
  for (const given of paths) {
    const root = resolve(given)
    if (!existsSync(root)) throw new Error(`--watch: ${given} does not exist`)
    const dir = statSync(root).isDirectory()
    const watcher = watch(root, { recursive: dir, persistent: false }, (_event, name) => {
      const full = dir ? resolve(root, String(name ?? '')) : root
      const rel = relative(root, full)
      if (dir && (rel === '' || isIgnored(rel))) return
      if (!counts(!dir, full, dir ? rel : full.split(sep).pop() || full)) return
      pending.add(relative(process.cwd(), full) || full.split(sep).pop() || full)
      if (timer !== undefined) clearTimeout(timer)
      timer = setTimeout(flush, debounceMs)
    })
    watcher.on('error', () => undefined) // a watched directory removed: nothing left to watch there
    watchers.push(watcher)
  }
  return {
    close() {
      if (timer !== undefined) clearTimeout(timer)
      for (const w of watchers) w.close()
    },
  }
}

/**
 * Take `--watch [PATH...]` out of `args`: the paths are the following arguments that do
 * not start with `-` and exist, except that the last one is left as the script when no
 * other positional would be. `--watch=PATH` adds one path. Returns the remaining
 * arguments and the paths (`['.']` for a bare `--watch`), or undefined paths without it.
 */
export function takeWatchFlag(args: readonly string[]): { rest: string[]; paths: string[] | undefined } {
  const rest: string[] = []
  let paths: string[] | undefined
  for (let i = 0; i < args.length; i += 1) {
    const a = args[i] as string
    if (a.startsWith('--watch=')) {
      paths = [...(paths ?? []), a.slice('--watch='.length)]
      continue
    }
    if (a !== '--watch') {
      rest.push(a)
      continue
    }
    paths = paths ?? []
    const taken: string[] = []
    while (i + 1 < args.length && !(args[i + 1] as string).startsWith('-') && existsSync(args[i + 1] as string)) {
      taken.push(args[i + 1] as string)
      i += 1
    }
    paths.push(...taken)
  }
  if (paths !== undefined) {
    // With no positional left, the last path taken was the script: give it back.
    const positionals = rest.filter(
      (a, i) =>
        !a.startsWith('-') &&
        !(i > 0 && /^--[\w-]+$/.test(rest[i - 1] as string) && !BOOLEAN_FLAGS.has(rest[i - 1] as string)),
    )
    if (positionals.length === 0 && paths.length > 0 && !statSync(paths.at(-1) as string).isDirectory()) {
      rest.unshift(paths.pop() as string)
    }
    if (paths.length === 0) paths.push('.')
  }
  return { rest, paths }
}

/** `baton start` flags without a value (the others take the next argument). */
const BOOLEAN_FLAGS = new Set(['--daemon', '--log-prefix', '--log-time'])
