// What a handshake request asks for, read from its headers and query before anything is spent:
// whether ws would take the upgrade at all, its origin, its protocol, its filters and cursor; and
// the request as our logs show it (the token redacted).
import type { FastifyRequest } from 'fastify';
import { TASK_EVENT_NAMES } from '../client/protocol.js';
import { V2_PROTOCOL } from './frames.js';

/** The eight event names of the contract (the client module's list: one list for both sides). */
const EVENT_TYPES: ReadonlySet<string> = new Set(TASK_EVENT_NAMES);

const CLASS_IDS = /^\s*\d{1,15}\s*(,\s*\d{1,15}\s*)*$/;

/** RFC 6455: the key is 16 random bytes in base64 (ws's own test). */
const WEBSOCKET_KEY = /^[+/0-9A-Za-z]{22}==$/;

/** Comma-separated RFC 7230 tokens: the Sec-WebSocket-Protocol that ws accepts (it also refuses repeats). */
const PROTOCOL_LIST = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*,[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*$/;

function protocolNames(value: string): string[] {
  return value.split(',').map((name) => name.trim());
}

/**
 * Why ws would refuse this upgrade, or `null`: ws's own header checks, made before the token is
 * spent. The route answers the 400 itself, so a check stricter than ws's (version 8, which ws
 * still takes) is a 400 too, never a 101 without a verdict.
 */
export function upgradeDefect(request: FastifyRequest): string | null {
  const { upgrade, 'sec-websocket-key': key, 'sec-websocket-protocol': protocols } = request.headers;
  if (upgrade?.toLowerCase() !== 'websocket') return 'Invalid Upgrade header';
  if (typeof key !== 'string' || !WEBSOCKET_KEY.test(key)) return 'Missing or invalid Sec-WebSocket-Key header';
  if (request.headers['sec-websocket-version'] !== '13') return 'Missing or invalid Sec-WebSocket-Version header';
  if (protocols !== undefined) {
    if (!PROTOCOL_LIST.test(protocols)) return 'Invalid Sec-WebSocket-Protocol header';
    const names = protocolNames(protocols);
    if (new Set(names).size !== names.length) return 'Invalid Sec-WebSocket-Protocol header';
  }
  return null;
}

/** Whether the client offers protocol v2 (the subprotocol `task-events.v2`). */
export function offersV2(request: FastifyRequest): boolean {
  const protocols = request.headers['sec-websocket-protocol'];
  return protocols !== undefined && protocolNames(protocols).includes(V2_PROTOCOL);
}

/** ws's choice of subprotocol: v2 when offered, else ws's own default (the first offered; none offered, none). */
export function selectProtocol(protocols: Set<string>): string | false {
  return protocols.has(V2_PROTOCOL) ? V2_PROTOCOL : (protocols.values().next().value ?? false);
}

/** True when a handshake with this `Origin` header (or none) may go on. */
export function originAllowed(origin: string | undefined, allowed: ReadonlySet<string> | null, required: boolean): boolean {
  if (origin === undefined) return !required;
  return allowed === null || allowed.has(origin.toLowerCase());
}

/** `object_class_ids=1,2,3`: `undefined` for a malformed list; `null` for no filter. */
export function parseObjectClassIds(value: unknown): ReadonlySet<number> | null | undefined {
  if (value === undefined || value === '') return null;
  if (typeof value !== 'string' || !CLASS_IDS.test(value)) return undefined;
  return new Set(value.split(',').map((id) => Number(id.trim())));
}

/** `event_types=task_created,task_deleted`: `undefined` when a name is unknown; `null` for no filter. */
export function parseEventTypes(value: unknown): ReadonlySet<string> | null | undefined {
  if (value === undefined || value === '') return null;
  if (typeof value !== 'string') return undefined;
  const names = value.split(',').map((name) => name.trim());
  return names.every((name) => EVENT_TYPES.has(name)) ? new Set(names) : undefined;
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
export function redactedRequest(request: FastifyRequest): Record<string, unknown> {
  return {
    method: request.method,
    url: redactedUrl(request.url),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort,
  };
}
