// Just enough of a Mach-O reader to check the darwin binaries on Linux: CPU type, the
// exported symbols (LC_SYMTAB), the linked dylibs (LC_LOAD_DYLIB) and the minimum macOS
// (LC_BUILD_VERSION).
import { readFileSync } from 'node:fs'

const MH_MAGIC_64 = 0xfeedfacf
const CPU = { 0x01000007: 'x86_64', 0x0100000c: 'arm64' }
const FILETYPE = { 1: 'object', 2: 'executable', 6: 'dylib', 8: 'bundle' }
const LC_SYMTAB = 0x2
const LC_LOAD_DYLIB = 0xc
const LC_BUILD_VERSION = 0x32
const N_EXT = 0x01
const N_TYPE = 0x0e
const N_SECT = 0x0e

/** Parse `file`: { cpu, filetype, exports: string[], dylibs: string[], minos } or throws. */
export function readMachO(file) {
  const b = readFileSync(file)
  if (b.readUInt32LE(0) !== MH_MAGIC_64) throw new Error(`${file} is not a 64-bit little-endian Mach-O`)
  const cpu = CPU[b.readUInt32LE(4)] ?? `cputype 0x${b.readUInt32LE(4).toString(16)}`
  const filetype = FILETYPE[b.readUInt32LE(12)] ?? `filetype ${b.readUInt32LE(12)}`
  const ncmds = b.readUInt32LE(16)
  const exports = []
  const dylibs = []
  let minos = null
  let off = 32
  for (let i = 0; i < ncmds; i++) {
    const cmd = b.readUInt32LE(off) & 0x7fffffff
    const size = b.readUInt32LE(off + 4)
    if (cmd === LC_SYMTAB) {
      const symoff = b.readUInt32LE(off + 8)
      const nsyms = b.readUInt32LE(off + 12)
      const stroff = b.readUInt32LE(off + 16)
      for (let s = 0; s < nsyms; s++) {
        const e = symoff + s * 16
        const type = b[e + 4]
        if (type & N_EXT && (type & N_TYPE) === N_SECT) {
          const start = stroff + b.readUInt32LE(e)
          exports.push(b.toString('latin1', start, b.indexOf(0, start)))
        }
      }
    } else if (cmd === LC_LOAD_DYLIB) {
      const start = off + b.readUInt32LE(off + 8)
      dylibs.push(b.toString('latin1', start, b.indexOf(0, start)))
    } else if (cmd === LC_BUILD_VERSION) {
      const v = b.readUInt32LE(off + 12)
      minos = `${v >>> 16}.${(v >>> 8) & 0xff}`
    }
    off += size
  }
  return { cpu, filetype, exports, dylibs, minos }
}
