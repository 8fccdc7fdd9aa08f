/**
 * Loads the Rust core (the napi-rs addon). Windows gets a clear "not supported" error,
 * as in Workerman: baton relies on fork/exec, Unix sockets and signals.
 */
import { createRequire } from 'node:module'
import type * as Binding from '../native/index.cjs'

/** The addon's exports. */
export type NativeBinding = typeof Binding

/** Thrown on platforms baton does not run on. */
export class UnsupportedPlatformError extends Error {
  constructor(platform: string) {
    super(
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

/** The addon, loaded once. */
export function native(): NativeBinding {
  if (cached) return cached
  assertSupportedPlatform()
  const require = createRequire(import.meta.url)
  cached = require('../native/index.cjs') as NativeBinding
  // A master started by `baton upgrade` inherits the old master's sockets and pid file:
  // close-on-exec at once, before an options or config file can start a process.
  const handover = process.env.BATON_UPGRADE
  if (handover) cached.sealUpgradeFds(handover)
  return cached
}
