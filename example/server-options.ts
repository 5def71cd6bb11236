// The example server's HTTP settings, in a module of their own so tests build the app with exactly
// what `npm start` uses (example/server.ts runs the server when imported).
import type { Server } from 'node:http';
import type { FastifyHttpOptions } from 'fastify';

/**
 * Timeouts of the HTTP server, chosen so that a client holding a connection without finishing its
 * request (slowloris: a request line or headers sent a byte at a time, or nothing at all) or
 * sending garbage cannot pin a socket for long. Node checks the header and request deadlines every
 * `connectionsCheckingInterval`, so a half-sent request is answered 408 and closed within
 * `headersTimeout + connectionsCheckingInterval` (6 s), a half-sent body within `requestTimeout +
 * connectionsCheckingInterval` (9 s); trickling bytes does not extend either deadline.
 *
 * None of them touches a WebSocket: once a request is upgraded, Node hands the socket over and ws
 * clears its idle timeout; the plugin's heartbeat watches those connections instead.
 */
export const SERVER_OPTIONS = {
  /**
   * Socket inactivity while a request is open (including while its handler runs). Longer than the
   * pool's 10 s wait for a connection, so a request stuck behind a busy pool still gets its answer.
   */
  connectionTimeout: 15_000,
  /** The whole request, headers and body, must arrive within this (REST bodies are small JSON). */
  requestTimeout: 8_000,
  /** Longer than the usual 60 s idle timeout of proxies, so the proxy closes idle connections first. */
  keepAliveTimeout: 65_000,
  /** On close, idle keep-alive connections are dropped; requests in flight finish. */
  forceCloseConnections: 'idle',
  http: {
    /** The request line and headers must arrive within this: a real client sends them at once. */
    headersTimeout: 5_000,
    /** How often Node looks for requests past those deadlines (its default, 30 s, would add up to 30 s). */
    connectionsCheckingInterval: 1_000,
  },
} as const satisfies FastifyHttpOptions<Server>;
