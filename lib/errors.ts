/**
 * The error frames of the contract: code → detail text. Every error that reaches a client
 * comes from this table.
 */
export const ERRORS = Object.freeze({
  ERR_INCORRECT_URL: 'Incorrect WebSocket URL.',
  ERR_INVALID_UUID: 'A valid UUID is required.',
  RECEIVE_NOT_SUPPORTED: 'This WebSocket connection does not support receiving messages.',
  ERR_RATE_LIMIT_EXCEEDED: 'The rate limit for requests has been exceeded. Please wait before trying again.',
  ERR_INVALID_OBJECT_CLASS_IDS: 'object_class_ids must be a comma-separated list of integers.',
} as const);

/** One of the error codes a client can receive. */
export type ErrorCode = keyof typeof ERRORS;

/** The text of the frame for `code`: `{"type":"error","error_code":…,"detail":…}`. */
export function errorFrame(code: ErrorCode): string {
  return JSON.stringify({ type: 'error', error_code: code, detail: ERRORS[code] });
}
