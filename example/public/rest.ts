// The example's REST API as the page calls it: every request with `Authorization: Token <key>`;
// an answer other than 2xx becomes an ApiError carrying the server's status and message.

/** A task as the API answers it. */
export interface Task {
  id: number;
  object_class_id: number;
  name: string;
  status: string;
  owners: number[];
  assignees: number[];
}

/** An object class or a user of the caller's environment. */
export interface Named {
  id: number;
  name: string;
}

/** What a task's PATCH may change. */
export type TaskChange = Partial<Pick<Task, 'name' | 'status' | 'object_class_id'>>;

/** Owners or assignees: the two lists of users a task has. */
export type Role = 'owners' | 'assignees';

/** A refused or failed request; `status` 401/403 is what the client takes for a terminal refusal. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Clocks that disagree by less than this are taken to agree (the Date header has whole seconds). */
const CLOCK_TOLERANCE_MS = 2000;

/** The REST API of one environment, reached with its API key. */
export class Rest {
  /** How far the server's clock is ahead of the page's, ms; 0 while they agree (see `token`). */
  clockOffset = 0;

  constructor(readonly key: string) {}

  async #request<T>(method: string, path: string, body?: object): Promise<{ body: T; response: Response }> {
    const headers: Record<string, string> = { authorization: `Token ${this.key}` };
    if (body) headers['content-type'] = 'application/json';
    const response = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
    if (!response.ok) {
      const answer = await response.json().catch(() => null) as { message?: string } | null;
      throw new ApiError(response.status, answer?.message ?? `${method} ${path}: ${response.status} ${response.statusText}`);
    }
    return { body: (response.status === 204 ? undefined : await response.json()) as T, response };
  }

  async #call<T>(method: string, path: string, body?: object): Promise<T> {
    return (await this.#request<T>(method, path, body)).body;
  }

  /**
   * A one-time WebSocket token. Also reads the server's clock from the answer's Date header: the
   * page compares event timestamps (the database's clock) with the moment it reconnected.
   */
  async token(): Promise<string> {
    const sent = Date.now();
    const { body, response } = await this.#request<{ uuid: string }>('GET', '/api/users/ws-auth/');
    const serverTime = Date.parse(response.headers.get('date') ?? '');
    if (Number.isFinite(serverTime)) {
      const offset = serverTime + 500 - (sent + Date.now()) / 2; // Date is truncated to the second
      this.clockOffset = Math.abs(offset) < CLOCK_TOLERANCE_MS ? 0 : offset;
    }
    return body.uuid;
  }

  objectClasses(): Promise<Named[]> {
    return this.#call<{ object_classes: Named[] }>('GET', '/api/object-classes/').then((answer) => answer.object_classes);
  }

  users(): Promise<Named[]> {
    return this.#call<{ users: Named[] }>('GET', '/api/users/').then((answer) => answer.users);
  }

  /** One page of the environment's tasks, in id order. */
  tasks(limit: number, offset: number): Promise<Task[]> {
    return this.#call<{ tasks: Task[] }>('GET', `/api/tasks/?limit=${limit}&offset=${offset}`).then((answer) => answer.tasks);
  }

  task(id: number): Promise<Task> {
    return this.#call('GET', `/api/tasks/${id}/`);
  }

  createTask(objectClassId: number, name: string): Promise<Task> {
    return this.#call('POST', '/api/tasks/', { object_class_id: objectClassId, name });
  }

  updateTask(id: number, change: TaskChange): Promise<Task> {
    return this.#call('PATCH', `/api/tasks/${id}/`, change);
  }

  deleteTask(id: number): Promise<void> {
    return this.#call('DELETE', `/api/tasks/${id}/`);
  }

  /** Adds (`PUT`) or removes (`DELETE`) a user as an owner or an assignee. */
  setMember(id: number, role: Role, userId: number, member: boolean): Promise<void> {
    return this.#call(member ? 'PUT' : 'DELETE', `/api/tasks/${id}/${role}/${userId}/`);
  }
}
