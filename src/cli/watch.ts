/**
 * Dev mode (`baton start app.js --watch [PATH...]`): file changes under the watched paths
 * trigger a graceful reload. Changes are collected for {@link WATCH_DEBOUNCE_MS} after
 * the last one (an editor's save is often several events), `node_modules` and dot
 * folders/files are ignored, and a reload that is still running when more changes come
 * is followed by exactly one more.
 */
import { existsSync, statSync, watch, type FSWatcher } from 'node:fs'
import { relative, resolve, sep } from 'node:path'

/** Quiet time after the last change before the reload starts. */
export const WATCH_DEBOUNCE_MS = 300

/** Whether a changed path (relative to its watched root) is ignored. */
export function isIgnored(relativePath: string): boolean {
  return relativePath
    .split(/[\\/]/)
    .some((part) => part === 'node_modules' || (part.startsWith('.') && part !== '.' && part !== '..'))
}

/** A running watcher. */
export interface Watcher {
  close(): void
}

/**
 * Watch `paths` (directories recursively, or single files) and call `onChanges` with the
 * changed paths (relative to the current directory, sorted) once they settle. Throws,
 * naming the path, when one does not exist.
 */
export function watchPaths(
  paths: readonly string[],
  onChanges: (files: string[]) => void,
  debounceMs = WATCH_DEBOUNCE_MS,
): Watcher {
  const watchers: FSWatcher[] = []
  const pending = new Set<string>()
  let timer: NodeJS.Timeout | undefined
  const flush = (): void => {
    timer = undefined
    const files = [...pending].sort()
    pending.clear()
    if (files.length > 0) onChanges(files)
  }
  for (const path of paths) {
    const root = resolve(path)
    if (!existsSync(root)) throw new Error(`--watch: ${path} does not exist`)
    const dir = statSync(root).isDirectory()
    const watcher = watch(root, { recursive: dir, persistent: false }, (_event, name) => {
      const full = dir ? resolve(root, String(name ?? '')) : root
      const rel = relative(root, full)
      if (dir && (rel === '' || isIgnored(rel))) return
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
const BOOLEAN_FLAGS = new Set(['--daemon', '--log-prefix'])
