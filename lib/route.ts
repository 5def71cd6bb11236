import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import type { ConnectionCaps } from './caps.js';
import { errorFrame, HostErrors, type ErrorCode } from './errors.js';
import type { Heartbeat } from './heartbeat.js';
import type { Hub, Ticket } from './hub.js';
import type { Authenticate, Identity } from './options.js';
import type { SlidingWindowLimiter } from './rate-limit.js';
import { isTokenShaped } from './tokens.js';

/** What the route needs from the other parts. */
export interface RouteOptions {
  path: string;
  unknownPathPrefix: string | false;
  hub: Hub;
  authenticate: Authenticate;
  /** The outbox position now (see Listener.position). */
  position: () => Promise<number>;
  limiter: SlidingWindowLimiter | null;
  heartbeat: Heartbeat;
  /** Lower-cased origins whose pages may connect; `null`: any. */
  allowedOrigins: ReadonlySet<string> | null;
  /** Refuse handshakes without an `Origin` header. */
  requireOrigin: boolean;
  caps: ConnectionCaps;
}

/** The outcome of a handshake, decided before the upgrade. */
type Verdict =
  | { error: ErrorCode }
  | { error: null; identity: Identity; objectClassIds: ReadonlySet<number> | null; afterEventId: number; ticket: Ticket };

const CLASS_IDS = /^\s*\d{1,15}\s*(,\s*\d{1,15}\s*)*$/;

/** RFC 6455: the key is 16 random bytes in base64 (ws's own test). */
const WEBSOCKET_KEY = /^[+/0-9A-Za-z]{22}==$/;

/** Comma-separated RFC 7230 tokens: the Sec-WebSocket-Protocol that ws accepts (it also refuses repeats). */
const PROTOCOL_LIST = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*,[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*$/;

function isProtocolList(value: string): boolean {
  if (!PROTOCOL_LIST.test(value)) return false;
  const names = value.split(',').map((name) => name.trim());
  return new Set(names).size === names.length;
}

/**
 * Why ws would refuse this upgrade, or `null`: ws's own header checks, made before the token is
 * spent. The route answers the 400 itself, so a check stricter than ws's (version 8, which ws
 * still takes) is a 400 too, never a 101 without a verdict.
 */
function upgradeDefect(request: FastifyRequest): string | null {
  const { upgrade, 'sec-websocket-key': key, 'sec-websocket-protocol': protocols } = request.headers;
  if (upgrade?.toLowerCase() !== 'websocket') return 'Invalid Upgrade header';
  if (typeof key !== 'string' || !WEBSOCKET_KEY.test(key)) return 'Missing or invalid Sec-WebSocket-Key header';
  if (request.headers['sec-websocket-version'] !== '13') return 'Missing or invalid Sec-WebSocket-Version header';
  if (protocols !== undefined && !isProtocolList(protocols)) return 'Invalid Sec-WebSocket-Protocol header';
  return null;
}

/** True when a handshake with this `Origin` header (or none) may go on. */
function originAllowed(origin: string | undefined, allowed: ReadonlySet<string> | null, required: boolean): boolean {
  if (origin === undefined) return !required;
  return allowed === null || allowed.has(origin.toLowerCase());
}

/** The URL with the value of every `uuid` parameter replaced, however its name is encoded (`%75uid`). */
function redactedUrl(url: string): string {
  const start = url.indexOf('?');
  if (start === -1) return url;
  const query = url.slice(start + 1).split('&').map((parameter) => {
    const equals = parameter.indexOf('=');
    const name = equals === -1 ? parameter : parameter.slice(0, equals);
    let decoded = name;
    try {
      decoded = decodeURIComponent(name.replaceAll('+', ' '));
    } catch {
      // a malformed escape: compared as it is
    }
    return decoded.toLowerCase() === 'uuid' ? `${name}=***` : parameter;
  });
  return `${url.slice(0, start)}?${query.join('&')}`;
}

/**
 * The request as logged on our routes: Fastify's default fields, with the token in the query
 * replaced by `***` — it is a credential, if a short-lived one, and logs outlive it.
 */
function redactedRequest(request: FastifyRequest): Record<string, unknown> {
  return {
    method: request.method,
    url: redactedUrl(request.url),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort,
  };
}

/** `undefined` for a malformed list; `null` for no filter. */
function parseObjectClassIds(value: unknown): ReadonlySet<number> | null | undefined {
  if (value === undefined || value === '') return null;
  if (typeof value !== 'string' || !CLASS_IDS.test(value)) return undefined;
  return new Set(value.split(',').map((id) => Number(id.trim())));
}

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
      return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'This Origin may not open task events.' });
    }
    if (limiter && !limiter.allow(request.ip)) return void verdicts.set(request, { error: 'ERR_RATE_LIMIT_EXCEEDED' });
    if (caps.full(request.ip)) return void verdicts.set(request, { error: 'ERR_RATE_LIMIT_EXCEEDED' });
    const query = request.query as Record<string, unknown>;
    const objectClassIds = parseObjectClassIds(query.object_class_ids);
    if (objectClassIds === undefined) return void verdicts.set(request, { error: 'ERR_INVALID_OBJECT_CLASS_IDS' });
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
      const afterEventId = await position();
      verdicts.set(request, { error: null, identity, objectClassIds, afterEventId, ticket });
    } catch (error) {
      hub.release(ticket);
      // Fastify answers 500 with this message; the cause (a database error) goes to the log only.
      throw new HostErrors.AUTHENTICATION({ cause: error });
    }
  }

  function connect(socket: WebSocket, request: FastifyRequest): void {
    const verdict = verdicts.get(request);
    verdicts.delete(request);
    if (!verdict) return refuse(socket, 'ERR_INVALID_UUID');
    if (verdict.error) return refuse(socket, verdict.error);
    // Counted at the open, synchronously: of two racing handshakes the later one is over the cap.
    const release = caps.acquire(verdict.identity, request.ip);
    if (!release) {
      hub.release(verdict.ticket);
      return refuse(socket, 'ERR_RATE_LIMIT_EXCEEDED');
    }
    socket.once('close', release);
    hub.join(socket, {
      environmentId: verdict.identity.environmentId,
      objectClassIds: verdict.objectClassIds,
      afterEventId: verdict.afterEventId,
      ticket: verdict.ticket,
    });
    heartbeat.track(socket);
    const { environmentId, userId } = verdict.identity;
    request.log.debug({ environmentId, userId }, 'task events: socket opened');
    socket.on('close', (code) => {
      hub.leave(socket);
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
