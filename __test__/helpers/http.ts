/** HTTP and socket helpers shared by the specs. */
import { readdirSync } from 'node:fs'
import * as http from 'node:http'
import * as net from 'node:net'

/** A complete response. */
export interface HttpResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/**
 * GET on a fresh connection (`agent: false` unless one is given); host defaults to
 * 127.0.0.1. Rejects on a connection error or when no response comes within 10 s.
 */
export function httpGet(options: http.RequestOptions): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const target = options.socketPath ? options : { host: '127.0.0.1', ...options }
    const req = http.get({ agent: false, ...target }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${options.path ?? '/'}: no response within 10 s`)))
    req.on('error', reject)
  })
}

/** Whether nothing listens on 127.0.0.1:`port` (by binding it briefly). */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** The control sockets and pid files left in a runtime dir, sorted. */
export function runtimeFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.sock') || f.endsWith('.pid'))
    .sort()
}
