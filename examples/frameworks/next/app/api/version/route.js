import { version } from '../../../../version.mjs'

export const dynamic = 'force-dynamic'

export function GET() {
  return new Response(version, { headers: { 'content-type': 'text/plain', 'x-pid': String(process.pid) } })
}
