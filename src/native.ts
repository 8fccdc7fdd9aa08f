/**
 * Loads the Rust core (the napi-rs addon). The binary comes from `native/` in a clone built
 * from source, or from the platform package `batonjs-<target>` that npm installs next to
 * `batonjs` (its optional dependencies). Windows gets a clear "not supported" error, as in
 * Workerman: baton relies on fork/exec, Unix sockets and signals. A platform without a
 * prebuilt binary gets an error naming it and the supported ones.
 */
import { createRequire } from 'node:module'
import type * as Binding from '../native/index.cjs'

/** The addon's exports. */
export type NativeBinding = typeof Binding

/**
 * The targets with a prebuilt binary, published as `batonjs-<target>`. Keep in step with
 * package.json's `napi.targets` and npm/.
 */
export const PREBUILT_TARGETS = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
] as const

/** Thrown on platforms baton does not run on, or has no binary for. */
export class UnsupportedPlatformError extends Error {
  constructor(platform: string, detail?: string) {
    super(
      detail ??
        `baton does not support ${platform}: it needs fork/exec, Unix sockets and POSIX signals. ` +
          'Run it on Linux or macOS (on Windows, use WSL).',
    )
    this.name = 'UnsupportedPlatformError'
  }
}

let cached: NativeBinding | undefined

/** Throws {@link UnsupportedPlatformError} anywhere but Linux and macOS. */
export function assertSupportedPlatform(): void {
  if (process.platform !== 'linux' && process.platform !== 'darwin') {
    throw new UnsupportedPlatformError(process.platform)
  }
}

/** Whether this Linux process runs on musl (no glibc version in Node's report). */
function isMusl(): boolean {
  if (process.platform !== 'linux') return false
  try {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
    return !report?.header?.glibcVersionRuntime
  } catch {
    return false
  }
}

/** This process's target in the platform packages' naming, e.g. `linux-x64-gnu`, `darwin-arm64`. */
export function currentTarget(
  platform: string = process.platform,
  arch: string = process.arch,
  musl: boolean = isMusl(),
): string {
  return platform === 'linux' ? `${platform}-${arch}-${musl ? 'musl' : 'gnu'}` : `${platform}-${arch}`
}

/** The error for a binary that did not load on `target`, with what to do about it. */
export function loadFailure(target: string, cause: unknown): Error {
  const why = cause instanceof Error ? cause.message.split('\n')[0] : String(cause)
  const supported = PREBUILT_TARGETS.join(', ')
  if (!(PREBUILT_TARGETS as readonly string[]).includes(target)) {
    return new UnsupportedPlatformError(
      target,
      `baton has no prebuilt binary for ${target} (Node ${process.version}). ` +
        `Prebuilt binaries exist for ${supported}, on Node 20, 22 and 24. ` +
        'On another Unix, build from source in a clone of the repository (needs Rust): ' +
        '`npm install` builds native/ for the machine it runs on.',
    )
  }
  const error = new Error(
    `baton could not load its native binary for ${target}: ${why}. ` +
      `It comes from the package batonjs-${target}, an optional dependency of batonjs: ` +
      'reinstall without --omit=optional / --no-optional, and with the same npm for the ' +
      'lock file and node_modules (npm skips optional packages of another platform).',
  )
  error.name = 'NativeLoadError'
  return error
}

/** The addon, loaded once. */
export function native(): NativeBinding {
  if (cached) return cached
  assertSupportedPlatform()
  const require = createRequire(import.meta.url)
  try {
    cached = require('../native/index.cjs') as NativeBinding
  } catch (cause) {
    throw loadFailure(currentTarget(), cause)
  }
  // A master started by `baton upgrade` inherits the old master's sockets and pid file:
  // close-on-exec at once, before an options or config file can start a process.
  const handover = process.env.BATON_UPGRADE
  if (handover) cached.sealUpgradeFds(handover)
  return cached
}
