/**
 * Free TCP ports, for the tests (`__test__/helpers/processes.ts` re-exports it) and the
 * benchmarks (`bench/lib/processes.mjs`). Plain ESM with JSDoc types.
 *
 * A port is found by binding port 0 and releasing it, then reserved for this run with a
 * file `<tmpdir>/baton-test-ports/<port>` created exclusively: ava runs the test files in
 * parallel processes, the kernel may hand the same released port to two of them, and two
 * baton fleets both bind it with SO_REUSEPORT without an error, so each would get half of
 * the other's connections. A reservation older than {@link STALE_MS} is taken over.
 */
import { lstatSync, mkdirSync, openSync, closeSync, statSync, utimesSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A reservation older than this (ms) belongs to an earlier run. */
const STALE_MS = 30 * 60 * 1000

/**
 * The reservation directory, or undefined when it cannot be trusted (not a directory of
 * this user, e.g. planted by someone else in a shared tmp dir).
 * @returns {string | undefined}
 */
function reservations() {
  const dir = join(tmpdir(), 'baton-test-ports')
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const st = lstatSync(dir)
    const uid = process.getuid?.()
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) return undefined
    return dir
  } catch {
    return undefined
  }
}

/**
 * Reserve `port` for this run; false when another test process reserved it less than
 * {@link STALE_MS} ago.
 * @param {number} port
 * @returns {boolean}
 */
export function reservePort(port) {
  const dir = reservations()
  if (dir === undefined) return true
  const file = join(dir, String(port))
  try {
    closeSync(openSync(file, 'wx', 0o600))
    return true
  } catch (e) {
    if (/** @type {NodeJS.ErrnoException} */ (e).code !== 'EEXIST') return true
  }
  try {
    if (Date.now() - statSync(file).mtimeMs < STALE_MS) return false
    const now = new Date()
    utimesSync(file, now, now)
    return true
  } catch {
    return false
  }
}

/**
 * A TCP port bound by nobody on `host` (default 127.0.0.1) once released.
 * @param {string} [host]
 * @returns {Promise<number>}
 */
function releasedPort(host) {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('freePort: no port assigned'))))
    })
  })
}

/**
 * A free TCP port on `host` (default 127.0.0.1), reserved for this run against the other
 * test processes (a small race remains with processes that do not use this function).
 * @param {string} [host]
 * @returns {Promise<number>}
 */
export async function freePort(host = '127.0.0.1') {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await releasedPort(host)
    if (reservePort(port)) return port
  }
  throw new Error('freePort: 100 ports in a row were reserved by other test processes')
}
