import { MAX_COMMENT_CHARS, MAX_PARAMETERS, MAX_PARAMETER_VALUE_CHARS, MAX_REASON_CHARS, MAX_TICKET_CHARS } from './schemas.js';
import { MAX_UNRULED_PARAMETERS } from '../grants/service.js';

const requestObject = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    requester: { type: 'string' },
    task: { type: ['string', 'null'] },
    role: { type: ['string', 'null'] },
    tasks: { type: 'array', items: { type: 'string' } },
    policy: { type: 'string' },
    status: { enum: ['pending', 'approved', 'denied', 'canceled', 'expired', 'revoked'] },
    reason: { type: 'string' },
    ticket: { type: ['string', 'null'] },
    requesterMfa: { type: 'boolean', description: 'the requester filed with an MFA-authenticated token' },
    parameters: { type: ['object', 'null'], additionalProperties: { type: 'string' } },
    durationHours: { type: 'number' },
    approvals: { type: 'array', items: { type: 'object' } },
    approvalsRequired: { type: 'integer' },
    createdAt: { type: 'string', format: 'date-time' },
    pendingExpiresAt: { type: 'string', format: 'date-time' },
    approvedAt: { type: ['string', 'null'], format: 'date-time' },
    expiresAt: { type: ['string', 'null'], format: 'date-time' },
  },
};
const error = { type: 'object', properties: { error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' } } } } };
const errors = Object.fromEntries(
  [
    ['400', 'bad input (field named)'],
    ['401', 'no identity'],
    ['403', 'not allowed'],
    ['404', 'unknown id'],
    ['409', 'wrong state'],
    ['429', 'this user filed requests faster than settings.requestRateBurst / requestRatePerHour allow (Retry-After says when to try again), has too many pending requests, or (auto policy) holds too many active grants'],
  ].map(([code, description]) => [code, { description, content: { 'application/json': { schema: error } } }]),
);
const ok = (description: string, schema: object) => ({ description, content: { 'application/json': { schema } } });
const idParam = [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }];
const decision = (summary: string) => ({
  post: {
    summary,
    parameters: idParam,
    requestBody: { required: false, content: { 'application/json': { schema: { type: 'object', properties: { comment: { type: 'string', maxLength: MAX_COMMENT_CHARS } } } } } },
    responses: { '200': ok('the changed request', requestObject), ...errors },
  },
});

/** OpenAPI 3.1 description of the control API. */
export const openApiDocument = {
  openapi: '3.1.0',
  info: { title: 'pamgate control API', version: '1' },
  components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
  security: [{ bearer: [] }],
  paths: {
    '/api/requests': {
      post: {
        summary: 'Request access to a task or role',
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: {
                type: 'object',
                properties: {
                  task: { type: 'string' },
                  role: { type: 'string' },
                  reason: { type: 'string', maxLength: MAX_REASON_CHARS },
                  durationHours: { type: 'number' },
                  ticket: { type: 'string', maxLength: MAX_TICKET_CHARS },
                  parameters: {
                    type: 'object',
                    maxProperties: MAX_PARAMETERS,
                    additionalProperties: { type: 'string', maxLength: MAX_PARAMETER_VALUE_CHARS },
                    description: `the parameters the policy's rules name, plus at most ${MAX_UNRULED_PARAMETERS} others`,
                  },
                },
              },
            },
          },
        },
        responses: { '201': ok('created (auto policies come back approved)', requestObject), ...errors },
      },
      get: {
        summary: 'List requests visible to the caller, oldest first, a page at a time',
        parameters: [
          { name: 'status', in: 'query', schema: { type: 'string' } },
          { name: 'requester', in: 'query', schema: { type: 'string' } },
          { name: 'limit', in: 'query', description: 'page size (default and most: 1000)', schema: { type: 'integer', minimum: 1, maximum: 1000 } },
          { name: 'after', in: 'query', description: 'id of the last request of the previous page', schema: { type: 'string' } },
        ],
        responses: {
          '200': {
            ...ok('requests', { type: 'array', items: requestObject }),
            headers: { link: { description: 'when more follow: `</api/requests?…&after=ID>; rel="next"`', schema: { type: 'string' } } },
          },
          ...errors,
        },
      },
    },
    '/api/requests/{id}': { get: { summary: 'One request', parameters: idParam, responses: { '200': ok('the request', requestObject), ...errors } } },
    '/api/requests/{id}/approve': decision('Approve (one approval per distinct approver)'),
    '/api/requests/{id}/deny': decision('Deny (final)'),
    '/api/requests/{id}/cancel': decision('Cancel your own pending request'),
    '/api/requests/{id}/revoke': decision('Revoke an approved grant'),
    '/api/review': {
      get: {
        summary: 'Grants held in a period with use counts (admins)',
        parameters: [
          { name: 'from', in: 'query', schema: { type: 'string', format: 'date-time' } },
          { name: 'to', in: 'query', schema: { type: 'string', format: 'date-time' } },
        ],
        responses: { '200': ok('review', { type: 'object' }), ...errors },
      },
    },
    '/healthz': { get: { security: [], summary: 'Liveness', responses: { '200': { description: 'alive' } } } },
    '/readyz': { get: { security: [], summary: 'Readiness (store and audit file usable)', responses: { '200': { description: 'ready' }, '503': { description: 'not ready' } } } },
    '/metrics': { get: { security: [], summary: 'Prometheus metrics', responses: { '200': { description: 'text exposition format' } } } },
  },
} as const;
