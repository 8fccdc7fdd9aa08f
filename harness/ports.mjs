/**
 * Free TCP ports, for the tests (`__test__/helpers/processes.ts` re-exports it) and the
 * benchmarks (`bench/lib/processes.mjs`). Plain ESM with JSDoc types.
 */
import net from 'node:net'

/**
 * A free TCP port on `host` (default 127.0.0.1), found by binding port 0 and releasing it
 * (a small race: another process may take it before the caller binds it).
 * @param {string} [host]
 * @returns {Promise<number>}
 */
export function freePort(host = '127.0.0.1') {
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
