// The example's REST API: token auth, everything scoped to the API key's environment. Another
// tenant's task, object class or user answers 404, exactly like one that does not exist.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { STATUS_CODES } from 'node:http';
import type pg from 'pg';

/** Options of the {@link api} plugin. */
export interface ApiOptions {
  pool: pg.Pool;
  /** Mints a one-time WebSocket token for one user of one environment. */
  issueToken: (identity: { environmentId: number; userId: number }) => Promise<string>;
}

/** The user an API key belongs to. */
interface Caller {
  userId: number;
  environmentId: number;
}

interface TaskRow {
  id: string;
  object_class_id: string;
  name: string;
  status: string;
  values: Record<string, unknown>;
  owners: string[];
  assignees: string[];
  created_at: Date;
  updated_at: Date;
}

const id = { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } as const;
const name = { type: 'string', minLength: 1, maxLength: 500 } as const;
const status = { type: 'string', minLength: 1, maxLength: 100 } as const;
const values = { type: 'object', description: 'any JSON object; replaces the whole object on update' } as const;
const taskParams = { type: 'object', additionalProperties: false, required: ['id'], properties: { id } } as const;
const memberParams = { type: 'object', additionalProperties: false, required: ['id', 'userId'], properties: { id, userId: id } } as const;
const task = {
  type: 'object',
  properties: {
    id: { type: 'integer' }, object_class_id: { type: 'integer' }, name: { type: 'string' }, status: { type: 'string' },
    values: { type: 'object', additionalProperties: true },
    owners: { type: 'array', items: { type: 'integer' } }, assignees: { type: 'array', items: { type: 'integer' } },
    created_at: { type: 'string', format: 'date-time' }, updated_at: { type: 'string', format: 'date-time' },
  },
} as const;
/** An object class or a user, as the list routes answer them (never a user's API key). */
const named = { type: 'object', properties: { id: { type: 'integer' }, name: { type: 'string' } } } as const;

// Every statement is fixed text with parameters; $1/$2 order is noted where it is not obvious.
/**
 * Adding a user to, and removing one from, a task's owners or assignees: $1 task, $2 user, $3
 * environment. FOR KEY SHARE keeps the task from being deleted meanwhile.
 */
function membershipSql(table: 'task_owners' | 'task_assignees'): { add: string; remove: string } {
  const member = 'member AS (SELECT id FROM users WHERE id = $2 AND environment_id = $3)';
  const found = 'SELECT EXISTS (SELECT 1 FROM task) AS task_found, EXISTS (SELECT 1 FROM member) AS user_found';
  return {
    add: `
      WITH task AS (SELECT id FROM tasks WHERE id = $1 AND environment_id = $3 FOR KEY SHARE), ${member},
           added AS (INSERT INTO ${table} (task_id, user_id) SELECT task.id, member.id FROM task, member ON CONFLICT DO NOTHING)
      ${found}`,
    remove: `
      WITH task AS (SELECT id FROM tasks WHERE id = $1 AND environment_id = $3), ${member},
           removed AS (DELETE FROM ${table} l USING task, member WHERE l.task_id = task.id AND l.user_id = member.id)
      ${found}`,
  };
}

const TASK_SQL = {
  // $1 environment, $2 object class: inserts nothing for another environment's class.
  create: `
    INSERT INTO tasks (environment_id, object_class_id, name, status, "values")
    SELECT oc.environment_id, oc.id, $3, $4, $5::jsonb FROM object_classes oc WHERE oc.id = $2 AND oc.environment_id = $1
    RETURNING id, object_class_id, name, status, "values", '{}'::bigint[] AS owners, '{}'::bigint[] AS assignees, created_at, updated_at`,
  list: `
    SELECT t.id, t.object_class_id, t.name, t.status, t."values", t.created_at, t.updated_at,
           ARRAY(SELECT o.user_id FROM task_owners o WHERE o.task_id = t.id ORDER BY o.user_id) AS owners,
           ARRAY(SELECT a.user_id FROM task_assignees a WHERE a.task_id = t.id ORDER BY a.user_id) AS assignees
    FROM tasks t WHERE t.environment_id = $1 AND ($2::bigint IS NULL OR t.object_class_id = $2)
    ORDER BY t.id LIMIT $3 OFFSET $4`,
  get: `
    SELECT t.id, t.object_class_id, t.name, t.status, t."values", t.created_at, t.updated_at,
           ARRAY(SELECT o.user_id FROM task_owners o WHERE o.task_id = t.id ORDER BY o.user_id) AS owners,
           ARRAY(SELECT a.user_id FROM task_assignees a WHERE a.task_id = t.id ORDER BY a.user_id) AS assignees
    FROM tasks t WHERE t.id = $1 AND t.environment_id = $2`,
  exists: 'SELECT 1 FROM tasks WHERE id = $1 AND environment_id = $2',
  // A NULL parameter keeps the column; a new object class must be one of the environment's own.
  update: `
    UPDATE tasks t SET name = coalesce($3, t.name), status = coalesce($4, t.status), "values" = coalesce($5::jsonb, t."values"),
                       object_class_id = coalesce($6, t.object_class_id), updated_at = now()
    WHERE t.id = $1 AND t.environment_id = $2
      AND ($6::bigint IS NULL OR EXISTS (SELECT 1 FROM object_classes oc WHERE oc.id = $6 AND oc.environment_id = $2))
    RETURNING t.id, t.object_class_id, t.name, t.status, t."values", t.created_at, t.updated_at,
              ARRAY(SELECT o.user_id FROM task_owners o WHERE o.task_id = t.id ORDER BY o.user_id) AS owners,
              ARRAY(SELECT a.user_id FROM task_assignees a WHERE a.task_id = t.id ORDER BY a.user_id) AS assignees`,
  delete: 'DELETE FROM tasks WHERE id = $1 AND environment_id = $2',
  owners: membershipSql('task_owners'),
  assignees: membershipSql('task_assignees'),
} as const;

/** $1 environment. */
const LIST_SQL = {
  objectClasses: 'SELECT id, name FROM object_classes WHERE environment_id = $1 ORDER BY id',
  users: 'SELECT id, name FROM users WHERE environment_id = $1 ORDER BY id',
} as const;

const API_KEY = /^Token\s+(\S+)\s*$/i;

class HttpError extends Error {
  constructor(readonly statusCode: number, message: string) {
    super(message);
  }
}

const notFound = (what: string, value: number) => new HttpError(404, `${what} ${value} not found`);

function toTask(row: TaskRow) {
  return {
    ...row,
    id: Number(row.id),
    object_class_id: Number(row.object_class_id),
    owners: row.owners.map(Number),
    assignees: row.assignees.map(Number),
  };
}

const toNamed = (row: { id: string; name: string }) => ({ id: Number(row.id), name: row.name });

/** `body/name must be string`: the part of the request and the field, then what is wrong. */
function validationMessage(error: FastifyError, request: FastifyRequest): string {
  const [first] = error.validation ?? [];
  if (!first) return error.message;
  const part = error.validationContext ?? 'request';
  const where = `${part}${first.instancePath}`;
  const params = first.params as Record<string, unknown>;
  if (first.keyword === 'required') return `${where}/${String(params.missingProperty)} is required`;
  if (first.keyword === 'additionalProperties') return `${where}/${String(params.additionalProperty)} is not allowed`;
  if (first.keyword === 'minProperties') {
    const schema = (request.routeOptions.schema as Record<string, { properties?: object } | undefined> | undefined)?.[part];
    return `${where} must set at least one of: ${Object.keys(schema?.properties ?? {}).join(', ')}`;
  }
  return `${where} ${first.message ?? 'is invalid'}`;
}

/** The REST routes under `/api/`, encapsulated with their own auth hook and error handler. */
export async function api(app: FastifyInstance, { pool, issueToken }: ApiOptions): Promise<void> {
  app.decorateRequest('caller', null);
  const callerOf = (request: FastifyRequest) => request.getDecorator<Caller>('caller');

  app.addHook('onRequest', async (request, reply) => {
    const key = API_KEY.exec(request.headers.authorization ?? '')?.[1];
    const { rows } = key
      ? await pool.query<{ id: string; environment_id: string }>('SELECT id, environment_id FROM users WHERE api_key = $1', [key])
      : { rows: [] };
    const user = rows[0];
    if (!user) {
      reply.header('www-authenticate', 'Token');
      throw new HttpError(401, 'A valid API key is required: send the header "Authorization: Token <api key>"');
    }
    request.setDecorator<Caller>('caller', { userId: Number(user.id), environmentId: Number(user.environment_id) });
  });

  app.setErrorHandler((error: FastifyError, request, reply: FastifyReply) => {
    if (error.validation) {
      return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: validationMessage(error, request) });
    }
    const statusCode = error.statusCode ?? 500;
    if (statusCode >= 500) {
      request.log.error({ err: error }, 'request failed');
      return reply.code(500).send({ statusCode: 500, error: 'Internal Server Error', message: 'Internal Server Error' });
    }
    return reply.code(statusCode).send({ statusCode, error: STATUS_CODES[statusCode] ?? 'Error', message: error.message });
  });

  app.get('/api/users/ws-auth/', {
    schema: { response: { 200: { type: 'object', properties: { uuid: { type: 'string', format: 'uuid' } } } } },
  }, async (request) => {
    const { environmentId, userId } = callerOf(request);
    return { uuid: await issueToken({ environmentId, userId }) };
  });

  // What a client needs to offer choices: the caller's environment's object classes and users.
  app.get('/api/object-classes/', {
    schema: { response: { 200: { type: 'object', properties: { object_classes: { type: 'array', items: named } } } } },
  }, async (request) => {
    const { rows } = await pool.query<{ id: string; name: string }>(LIST_SQL.objectClasses, [callerOf(request).environmentId]);
    return { object_classes: rows.map(toNamed) };
  });

  app.get('/api/users/', {
    schema: { response: { 200: { type: 'object', properties: { users: { type: 'array', items: named } } } } },
  }, async (request) => {
    const { rows } = await pool.query<{ id: string; name: string }>(LIST_SQL.users, [callerOf(request).environmentId]);
    return { users: rows.map(toNamed) };
  });

  app.post<{ Body: { object_class_id: number; name: string; status: string; values: object } }>('/api/tasks/', {
    schema: {
      body: {
        type: 'object', additionalProperties: false, required: ['object_class_id', 'name'],
        properties: { object_class_id: id, name, status: { ...status, default: 'open' }, values: { ...values, default: {} } },
      },
      response: { 201: task },
    },
  }, async (request, reply) => {
    const { object_class_id: objectClassId, name, status, values } = request.body;
    const { rows } = await pool.query<TaskRow>(TASK_SQL.create, [callerOf(request).environmentId, objectClassId, name, status, JSON.stringify(values)]);
    if (!rows[0]) throw notFound('Object class', objectClassId);
    return reply.code(201).send(toTask(rows[0]));
  });

  app.get<{ Querystring: { object_class_id?: number; limit: number; offset: number } }>('/api/tasks/', {
    schema: {
      querystring: {
        type: 'object', additionalProperties: false,
        properties: { object_class_id: id, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 }, offset: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 0 } },
      },
      response: { 200: { type: 'object', properties: { tasks: { type: 'array', items: task } } } },
    },
  }, async (request) => {
    const { object_class_id: objectClassId, limit, offset } = request.query;
    const { rows } = await pool.query<TaskRow>(TASK_SQL.list, [callerOf(request).environmentId, objectClassId ?? null, limit, offset]);
    return { tasks: rows.map(toTask) };
  });

  app.get<{ Params: { id: number } }>('/api/tasks/:id/', { schema: { params: taskParams, response: { 200: task } } }, async (request) => {
    const { rows } = await pool.query<TaskRow>(TASK_SQL.get, [request.params.id, callerOf(request).environmentId]);
    if (!rows[0]) throw notFound('Task', request.params.id);
    return toTask(rows[0]);
  });

  app.patch<{ Params: { id: number }; Body: { object_class_id?: number; name?: string; status?: string; values?: object } }>('/api/tasks/:id/', {
    schema: {
      params: taskParams,
      body: { type: 'object', additionalProperties: false, minProperties: 1, properties: { object_class_id: id, name, status, values } },
      response: { 200: task },
    },
  }, async (request) => {
    const { environmentId } = callerOf(request);
    const { object_class_id: objectClassId, name, status, values } = request.body;
    const { rows } = await pool.query<TaskRow>(TASK_SQL.update, [
      request.params.id, environmentId, name ?? null, status ?? null, values === undefined ? null : JSON.stringify(values), objectClassId ?? null,
    ]);
    if (rows[0]) return toTask(rows[0]);
    const found = await pool.query(TASK_SQL.exists, [request.params.id, environmentId]);
    throw found.rowCount ? notFound('Object class', objectClassId as number) : notFound('Task', request.params.id);
  });

  app.delete<{ Params: { id: number } }>('/api/tasks/:id/', { schema: { params: taskParams } }, async (request, reply) => {
    const { rowCount } = await pool.query(TASK_SQL.delete, [request.params.id, callerOf(request).environmentId]);
    if (!rowCount) throw notFound('Task', request.params.id);
    return reply.code(204).send();
  });

  // PUT adds, DELETE removes; both idempotent, both 204 once the task and the user are found.
  for (const relation of ['owners', 'assignees'] as const) {
    for (const method of ['PUT', 'DELETE'] as const) {
      app.route<{ Params: { id: number; userId: number } }>({
        method, url: `/api/tasks/:id/${relation}/:userId/`, schema: { params: memberParams },
        handler: async (request, reply) => {
          const sql = TASK_SQL[relation][method === 'PUT' ? 'add' : 'remove'];
          const { rows } = await pool.query<{ task_found: boolean; user_found: boolean }>(sql, [request.params.id, request.params.userId, callerOf(request).environmentId]);
          if (!rows[0]?.task_found) throw notFound('Task', request.params.id);
          if (!rows[0].user_found) throw notFound('User', request.params.userId);
          return reply.code(204).send();
        },
      });
    }
  }
}
