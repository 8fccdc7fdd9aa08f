/**
 * The drain's list of open connections (src/worker/connections.ts): an intrusive list, so
 * that a closed connection is held by nothing (what a Map of sockets cost the garbage
 * collector is measured by bench/drain-gc.mjs, docs/benchmarks.md).
 */
import * as net from 'node:net'

import test from 'ava'

import { Connections } from '../src/worker/connections.js'

const sockets = (n: number): net.Socket[] => Array.from({ length: n }, () => new net.Socket())

test('add, get and size; a socket is found only in the list that holds it', (t) => {
  const list = new Connections()
  const other = new Connections()
  const [a, b] = sockets(2)
  t.is(list.size, 0)
  t.is(list.get(a), undefined)
  const ca = list.add(a)
  const cb = list.add(b)
  t.is(list.size, 2)
  t.is(list.get(a), ca)
  t.is(list.get(b), cb)
  t.is(ca.socket, a)
  t.is(other.get(a), undefined, 'another list does not see it')
  t.is(other.delete(a), undefined, 'nor removes it')
  t.is(list.size, 2)
})

test('values() runs newest first; delete unlinks from the head, the middle and the tail', (t) => {
  const list = new Connections()
  const s = sockets(5)
  for (const socket of s) list.add(socket)
  const order = (): net.Socket[] => [...list.values()].map((c) => c.socket)
  t.deepEqual(order(), [...s].reverse())
  list.delete(s[2]) // middle
  list.delete(s[4]) // head (newest)
  list.delete(s[0]) // tail (oldest)
  t.deepEqual(order(), [s[3], s[1]])
  t.is(list.size, 2)
  t.is(list.get(s[2]), undefined)
  t.is(list.delete(s[2]), undefined, 'a second delete finds nothing')
  t.is(list.size, 2)
  list.delete(s[1])
  list.delete(s[3])
  t.deepEqual(order(), [])
  t.is(list.size, 0)
  list.add(s[0])
  t.deepEqual(order(), [s[0]], 'usable again once empty')
})

test('deleting the current record while iterating goes on with the next one', (t) => {
  const list = new Connections()
  const s = sockets(4)
  for (const socket of s) list.add(socket)
  const seen: net.Socket[] = []
  for (const conn of list.values()) {
    seen.push(conn.socket)
    list.delete(conn.socket)
  }
  t.deepEqual(seen, [...s].reverse())
  t.is(list.size, 0)
})

test('a removed record keeps no neighbour and no list: a socket kept after it closed holds nothing else', (t) => {
  const list = new Connections()
  const [a, b, c] = sockets(3)
  list.add(a)
  const middle = list.add(b)
  list.add(c)
  t.not(middle.prev, undefined)
  t.not(middle.next, undefined)
  const removed = list.delete(b)
  t.is(removed, middle)
  t.is(middle.prev, undefined)
  t.is(middle.next, undefined)
  t.is(middle.list, undefined)
  // Its neighbours are linked to each other now.
  t.is(list.get(c)?.next, list.get(a))
  t.is(list.get(a)?.prev, list.get(c))
})

test('a socket removed and seen again gets a fresh record', (t) => {
  const list = new Connections()
  const [a] = sockets(1)
  const first = list.add(a)
  first.shed = true
  list.delete(a)
  const second = list.add(a)
  t.not(second, first)
  t.false(second.shed)
  t.is(list.get(a), second)
  t.is(list.size, 1)
})
