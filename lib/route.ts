import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import type { ConnectionCaps } from './caps.js';
import { cursorAt, type Cursor, type CursorCodec } from './cursor.js';
import { errorFrame, HostErrors, type ErrorCode } from './errors.js';
import { readyFrame } from './frames.js';
import type { Filter, Start } from './group.js';
import type { Heartbeat } from './heartbeat.js';
import type { Hub, Ticket } from './hub.js';
import type { Authenticate, Identity } from './options.js';
import type { SlidingWindowLimiter } from './rate-limit.js';
import { offersV2, originAllowed, parseEventTypes, parseObjectClassIds, redactedRequest, upgradeDefect } from './request.js';
import { refusalOutcome, type HandshakeDetail } from './signals.js';
import type { Snapshot } from './snapshot.js';
import { isTokenShaped } from './tokens.js';

/** What the route needs from the other parts. */
export interface RouteOptions {
  path: string;
  unknownPathPrefix: string | false;
  hub: Hub;
  authenticate: Authenticate;
  /** v1: the outbox position now (see Listener.position). */
  position: () => Promise<number>;
  /** v2: the snapshot now, and whether the outbox still holds everything after `from`. */
  streamPoint: (from: Cursor | null) => Promise<{ snapshot: Snapshot; expired: boolean }>;
  /** v2: the cursor codec (its key is read from the database at ready). */
  cursors: () => CursorCodec;
  /** v2: sends a resume's backlog, then lets live events follow. */
  resume: (socket: WebSocket, filter: Filter, from: Cursor, to: Snapshot) => void;
  limiter: SlidingWindowLimiter | null;
  heartbeat: Heartbeat;
  /** Lower-cased origins whose pages may connect; `null`: any. */
  allowedOrigins: ReadonlySet<string> | null;
  /** Refuse handshakes without an `Origin` header. */
  requireOrigin: boolean;
  caps: ConnectionCaps;
  /** How each handshake ended: refused (a frame, 403 or 500) or accepted. */
  onHandshake: (detail: HandshakeDetail) => void;
  /** A socket that had joined closed with `code`. */
  onDisconnect: (socket: WebSocket, code: number) => void;
}

/** The outcome of a handshake, decided before the upgrade. */
type Verdict =
  | { error: ErrorCode }
  | { error: null; identity: Identity; filter: Filter; start: Start; ticket: Ticket; resumeFrom: Cursor | null };

/** Sends one contract error frame, then closes with 1000 (normal closure). */
function refuse(socket: WebSocket, code: ErrorCode): void {
  if (socket.readyState !== socket.OPEN) return;
  socket.send(errorFrame(code));
  socket.close(1000);
}

function withoutTrailingSlash(path: string): string {
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}

/**
 * The WebSocket route: handshake (rate limit, filter, token) in `preValidation`, before the upgrade,
 * so that a failure of authentication itself is an HTTP 500 and no socket; the contract's error
 * frames after the upgrade; the socket handed to the hub.
 */
export function registerRoute(app: FastifyInstance, options: RouteOptions): void {
  const { hub, authenticate, position, limiter, heartbeat, allowedOrigins, requireOrigin, caps } = options;
  const verdicts = new WeakMap<FastifyRequest, Verdict>();

  async function handshake(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    if (!request.ws) return; // a plain HTTP request: the 426 handler answers it, no token is spent
    const defect = upgradeDefect(request);
    // Answered before ws sees it, so no token is spent; RFC 6455 4.4: name the version we speak.
    if (defect) return reply.code(400).header('sec-websocket-version', '13').send({ statusCode: 400, error: 'Bad Request', message: defect });
    // Cross-site WebSocket hijacking: browsers apply no CORS to WebSockets; Origin names the page.
    if (!originAllowed(request.headers.origin, allowedOrigins, requireOrigin)) {
      options.onHandshake({ outcome: 'forbidden_origin', resume: false });
      return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'This Origin may not open task events.' });
    }
    if (limiter && !limiter.allow(request.ip)) return void verdicts.set(request, { error: 'ERR_RATE_LIMIT_EXCEEDED' });
    if (caps.full(request.ip)) return void verdicts.set(request, { error: 'ERR_RATE_LIMIT_EXCEEDED' });
    const query = request.query as Record<string, unknown>;
    const objectClassIds = parseObjectClassIds(query.object_class_ids);
    if (objectClassIds === undefined) return void verdicts.set(request, { error: 'ERR_INVALID_OBJECT_CLASS_IDS' });
    const eventTypes = parseEventTypes(query.event_types);
    if (eventTypes === undefined) return void verdicts.set(request, { error: 'ERR_INVALID_EVENT_TYPES' });
    const v2 = offersV2(request);
    const resumeFrom = v2 && query.cursor !== undefined && query.cursor !== '' ? options.cursors().decode(query.cursor) : null;
    if (v2 && resumeFrom === null && query.cursor !== undefined && query.cursor !== '') return void verdicts.set(request, { error: 'ERR_INVALID_CURSOR' });
    const token = query.uuid;
    // The contract's token is a UUID v4: anything else is refused before `authenticate` (a custom
    // one too) is asked, so junk tokens cost no database round trip.
    if (!isTokenShaped(token)) return void verdicts.set(request, { error: 'ERR_INVALID_UUID' });
    const ticket = hub.reserve();
    try {
      const identity = await authenticate(token, request);
      if (!identity) {
        hub.release(ticket);
        return void verdicts.set(request, { error: 'ERR_INVALID_UUID' });
      }
      let start: Start;
      if (v2) {
        const point = await options.streamPoint(resumeFrom);
        if (point.expired) {
          hub.release(ticket);
          return void verdicts.set(request, { error: 'ERR_CURSOR_EXPIRED' });
        }
        start = { protocol: 2, snapshot: point.snapshot };
      } else {
        start = { protocol: 1, afterEventId: await position() };
      }
      const filter = { environmentId: identity.environmentId, objectClassIds, eventTypes };
      verdicts.set(request, { error: null, identity, filter, start, ticket, resumeFrom });
    } catch (error) {
      hub.release(ticket);
      options.onHandshake({ outcome: 'error', resume: false });
      // Fastify answers 500 with this message; the cause (a database error) goes to the log only.
      throw new HostErrors.AUTHENTICATION({ cause: error });
    }
  }

  /** Refuses a handshake with the error frame `code`, and reports it. */
  function refuseHandshake(socket: WebSocket, code: ErrorCode): void {
    options.onHandshake({ outcome: refusalOutcome(code), resume: false });
    refuse(socket, code);
  }

  function connect(socket: WebSocket, request: FastifyRequest): void {
    const verdict = verdicts.get(request);
    verdicts.delete(request);
    if (!verdict) return refuseHandshake(socket, 'ERR_INVALID_UUID');
    if (verdict.error) return refuseHandshake(socket, verdict.error);
    // Counted at the open, synchronously: of two racing handshakes the later one is over the cap.
    const release = caps.acquire(verdict.identity, request.ip);
    if (!release) {
      hub.release(verdict.ticket);
      return refuseHandshake(socket, 'ERR_RATE_LIMIT_EXCEEDED');
    }
    socket.once('close', release);
    const { filter, start, ticket, resumeFrom } = verdict;
    options.onHandshake({ outcome: 'ok', resume: resumeFrom !== null });
    if (start.protocol === 2) socket.send(readyFrame(options.cursors().encode(resumeFrom ?? cursorAt(start.snapshot))));
    hub.join(socket, { ...filter, start, ticket, held: resumeFrom !== null });
    if (start.protocol === 2 && resumeFrom) options.resume(socket, filter, resumeFrom, start.snapshot);
    heartbeat.track(socket);
    const { environmentId, userId } = verdict.identity;
    request.log.debug({ environmentId, userId }, 'task events: socket opened');
    socket.on('close', (code) => {
      hub.leave(socket);
      options.onDisconnect(socket, code);
      request.log.debug({ environmentId, userId, code }, 'task events: socket closed');
    });
    socket.on('message', () => {
      hub.leave(socket);
      refuse(socket, 'RECEIVE_NOT_SUPPORTED');
    });
  }

  function upgradeRequired(_request: FastifyRequest, reply: FastifyReply): void {
    void reply.code(426).header('upgrade', 'websocket').send({
      statusCode: 426,
      error: 'Upgrade Required',
      message: 'This endpoint accepts WebSocket connections only.',
    });
  }

  // The token is in the query string, which Fastify logs with the URL: on every log line of these
  // routes (incoming request, completion, the 500's error) the request is serialized redacted.
  const logSerializers = { req: redactedRequest };
  const paths = new Set([options.path, withoutTrailingSlash(options.path)]);
  for (const url of paths) {
    app.route({ method: 'GET', url, logSerializers, preValidation: handshake, handler: upgradeRequired, wsHandler: connect });
  }
  if (options.unknownPathPrefix) {
    app.route({
      method: 'GET',
      logSerializers,
      url: `${withoutTrailingSlash(options.unknownPathPrefix)}/*`,
      handler: (_request, reply) => void reply.code(404).send({ statusCode: 404, error: 'Not Found', message: 'Incorrect WebSocket URL.' }),
      wsHandler: (socket) => refuse(socket, 'ERR_INCORRECT_URL'),
    });
  }
}
