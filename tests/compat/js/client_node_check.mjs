// Yard compatibility check with the official JavaScript client, @kubernetes/client-node (pinned
// 1.4.0: the 2.x line needs a newer Node than this machine's v20). Prints one PASS/FAIL/SKIP line
// per check and exits non-zero if any failed. The driver is crates/yard/tests/compat_e2e.rs; it
// passes YARD_COMPAT_OLD_RV, a resourceVersion compacted away, for the 410 check.
//
// client-node has no "wait for condition" helper; the Deployment's Available condition is waited
// for with its Watch, as its users do.
import * as k8s from '@kubernetes/client-node';
import { PassThrough, Writable } from 'node:stream';
import { inspect } from 'node:util';

const NS = 'compat-client-node';
const LOG_LINE = 'compat-log-line';
let failed = 0;

function oneLine(s) {
  return String(s).split(/\s+/).join(' ').slice(0, 600);
}

function describe(e) {
  if (e && e.code !== undefined && e.body !== undefined) {
    return `ApiException ${e.code}: ${oneLine(typeof e.body === 'string' ? e.body : JSON.stringify(e.body))}`;
  }
  if (e instanceof Error) return oneLine(e.message);
  if (e && typeof e === 'object') return oneLine(e.message || inspect(e, { depth: 1, breakLength: Infinity }));
  return oneLine(e);
}

async function check(name, fn, timeoutMs = 60000) {
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`timed out after ${timeoutMs / 1000}s`)), timeoutMs);
      }),
    ]);
    console.log(`PASS ${name}`);
    return true;
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${describe(e)}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function expect(cond, why) {
  if (!cond) throw new Error(why);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const kc = new k8s.KubeConfig();
kc.loadFromDefault();
const core = kc.makeApiClient(k8s.CoreV1Api);
const apps = kc.makeApiClient(k8s.AppsV1Api);
const objects = k8s.KubernetesObjectApi.makeApiClient(kc);
const watcher = new k8s.Watch(kc);

const cm = (name, data) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: NS }, data });
const patchAs = (strategy) => k8s.setHeaderOptions('Content-Type', strategy);

const ok = await check('setup', async () => {
  await core.createNamespace({ body: { metadata: { name: NS } } });
  await core.createNamespacedPod({
    namespace: NS,
    body: {
      metadata: { name: 'echo', labels: { app: 'echo' } },
      spec: {
        containers: [{ name: 'main', image: 'busybox:1.36', command: ['sh', '-c', `echo ${LOG_LINE}; exec sleep 3600`] }],
      },
    },
  });
  await apps.createNamespacedDeployment({
    namespace: NS,
    body: {
      metadata: { name: 'web' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: { containers: [{ name: 'nginx', image: 'nginx:1.14.2', ports: [{ containerPort: 80 }] }] },
        },
      },
    },
  });
});
if (!ok) process.exit(1);

await check('crud', async () => {
  await core.createNamespacedConfigMap({ namespace: NS, body: cm('crud', { a: '1' }) });
  const got = await core.readNamespacedConfigMap({ name: 'crud', namespace: NS });
  expect(got.data.a === '1', `get: ${JSON.stringify(got.data)}`);
  const list = await core.listNamespacedConfigMap({ namespace: NS });
  expect(list.items.some((i) => i.metadata.name === 'crud'), 'list lacks crud');
  got.data = { a: '2' };
  const upd = await core.replaceNamespacedConfigMap({ name: 'crud', namespace: NS, body: got });
  expect(upd.data.a === '2', `update: ${JSON.stringify(upd.data)}`);
  await core.deleteNamespacedConfigMap({ name: 'crud', namespace: NS });
  try {
    await core.readNamespacedConfigMap({ name: 'crud', namespace: NS });
    throw new Error('still exists after delete');
  } catch (e) {
    expect(e.code === 404, `get after delete: ${describe(e)}`);
  }
});

await check('list_limit_continue', async () => {
  for (let i = 0; i < 5; i++) await core.createNamespacedConfigMap({ namespace: NS, body: cm(`page-${i}`, { i: `${i}` }) });
  const seen = [];
  let cont;
  let pages = 0;
  do {
    const page = await core.listNamespacedConfigMap({ namespace: NS, limit: 2, _continue: cont });
    pages++;
    expect(page.items.length <= 2, `page of ${page.items.length} with limit=2`);
    seen.push(...page.items.map((i) => i.metadata.name));
    cont = page.metadata._continue;
    expect(pages < 20, 'more than 20 pages');
  } while (cont);
  for (let i = 0; i < 5; i++) expect(seen.includes(`page-${i}`), `paged names ${seen}`);
  expect(new Set(seen).size === seen.length, `duplicates across pages: ${seen}`);
  expect(pages >= 3, `only ${pages} pages`);
});

const path = `/api/v1/namespaces/${NS}/configmaps`;

// Watch from `since`; resolves with the first ERROR Status or when ADDED `name` arrives after the create.
async function watchFrom(since, name) {
  let resolve, reject;
  const result = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const req = await watcher.watch(
    path,
    { resourceVersion: since, timeoutSeconds: 20 },
    (type, obj) => {
      if (type === 'ERROR') resolve({ error: obj });
      else if (type === 'ADDED' && name && obj.metadata.name === name) resolve({ added: obj });
    },
    (err) => (err ? reject(err) : resolve({ ended: true })),
  );
  try {
    if (name) {
      await sleep(300);
      await core.createNamespacedConfigMap({ namespace: NS, body: cm(name, { w: '1' }) });
    }
    return await result;
  } finally {
    req.abort();
  }
}

const listRv = async () => (await core.listNamespacedConfigMap({ namespace: NS })).metadata.resourceVersion;

await check('watch', async () => {
  const r = await watchFrom(await listRv(), 'watched');
  expect(r.added, `watch: ${JSON.stringify(r)}`);
});

await check('watch_410_relist', async () => {
  const old = process.env.YARD_COMPAT_OLD_RV;
  expect(old, 'YARD_COMPAT_OLD_RV not set by the driver');
  const r = await watchFrom(old, null);
  expect(r.error, `watch from a compacted resourceVersion: ${JSON.stringify(r)}`);
  expect(r.error.code === 410 && r.error.reason === 'Expired', `status ${JSON.stringify(r.error)}`);
  const again = await watchFrom(await listRv(), 'after-410');
  expect(again.added, `watch after relist: ${JSON.stringify(again)}`);
});

await check('server_side_apply', async () => {
  let out;
  for (const v of ['v1', 'v2']) {
    out = await objects.patch(cm('ssa', { k: v }), undefined, undefined, 'client-node-compat', true, k8s.PatchStrategy.ServerSideApply);
    expect(out.data.k === v, `apply ${v}: ${JSON.stringify(out.data)}`);
  }
  const managers = (out.metadata.managedFields || []).map((m) => m.manager);
  expect(managers.includes('client-node-compat'), `managers ${managers}`);
});

await check('patch_json_merge_strategic', async () => {
  await core.createNamespacedConfigMap({ namespace: NS, body: cm('patched', { a: '1' }) });
  let out = await core.patchNamespacedConfigMap(
    { name: 'patched', namespace: NS, body: [{ op: 'add', path: '/data/b', value: '2' }] },
    patchAs(k8s.PatchStrategy.JsonPatch),
  );
  expect(JSON.stringify(out.data) === JSON.stringify({ a: '1', b: '2' }), `json patch: ${JSON.stringify(out.data)}`);
  out = await core.patchNamespacedConfigMap(
    { name: 'patched', namespace: NS, body: { data: { a: null, c: '3' } } },
    patchAs(k8s.PatchStrategy.MergePatch),
  );
  expect(JSON.stringify(out.data) === JSON.stringify({ b: '2', c: '3' }), `merge patch: ${JSON.stringify(out.data)}`);
  const d = await apps.patchNamespacedDeployment(
    {
      name: 'web',
      namespace: NS,
      body: { spec: { template: { spec: { containers: [{ name: 'nginx', env: [{ name: 'X', value: '1' }] }] } } } },
    },
    patchAs(k8s.PatchStrategy.StrategicMergePatch),
  );
  const cs = d.spec.template.spec.containers;
  expect(cs.length === 1 && cs[0].image === 'nginx:1.14.2', `strategic containers: ${JSON.stringify(cs)}`);
  expect(JSON.stringify(cs[0].env) === JSON.stringify([{ name: 'X', value: '1' }]), `strategic env: ${JSON.stringify(cs[0].env)}`);
});

await check(
  'wait_deployment_available',
  async () => {
    await new Promise((resolve, reject) => {
      let req;
      watcher
        .watch(
          `/apis/apps/v1/namespaces/${NS}/deployments`,
          { fieldSelector: 'metadata.name=web', timeoutSeconds: 80 },
          (type, obj) => {
            const conds = (obj.status && obj.status.conditions) || [];
            if (conds.some((c) => c.type === 'Available' && c.status === 'True')) {
              resolve();
              if (req) req.abort();
            }
          },
          (err) => reject(err || new Error('watch ended before the Deployment was Available')),
        )
        .then((r) => (req = r), reject);
    });
  },
  90000,
);

async function runningPod(name, selector) {
  for (let i = 0; i < 600; i++) {
    const pods = name
      ? [await core.readNamespacedPod({ name, namespace: NS })]
      : (await core.listNamespacedPod({ namespace: NS, labelSelector: selector })).items;
    const running = pods.filter((p) => p.status && p.status.phase === 'Running');
    if (running.length) return running[0].metadata.name;
    await sleep(100);
  }
  throw new Error(`no running pod ${name || selector}`);
}

function collector() {
  const chunks = [];
  const w = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  w.text = () => Buffer.concat(chunks).toString('utf8');
  return w;
}

await check('exec', async () => {
  const pod = await runningPod('echo');
  const out = collector();
  const err = collector();
  const status = await new Promise((resolve, reject) => {
    new k8s.Exec(kc).exec(NS, pod, 'main', ['echo', 'hello-from-exec'], out, err, null, false, resolve).catch(reject);
  });
  expect(status.status === 'Success', `status ${JSON.stringify(status)}`);
  expect(out.text().trim() === 'hello-from-exec', `stdout ${JSON.stringify(out.text())} stderr ${JSON.stringify(err.text())}`);
});

await check('logs', async () => {
  const pod = await runningPod('echo');
  const text = await core.readNamespacedPodLog({ name: pod, namespace: NS });
  expect(String(text).includes(LOG_LINE), `logs ${JSON.stringify(text)}`);
  // And the streaming Log helper.
  const out = collector();
  await new Promise((resolve, reject) => {
    new k8s.Log(kc)
      .log(NS, pod, 'main', out, { follow: false })
      .then((req) => {
        out.on('finish', resolve);
        setTimeout(resolve, 5000);
        return req;
      })
      .catch(reject);
  });
  expect(out.text().includes(LOG_LINE), `Log stream ${JSON.stringify(out.text())}`);
});

await check(
  'port_forward',
  async () => {
    const pod = await runningPod(null, 'app=web');
    const input = new PassThrough();
    const out = collector();
    const err = collector();
    const ws = await new k8s.PortForward(kc).portForward(NS, pod, [80], out, err, input);
    input.write('GET / HTTP/1.0\r\nHost: localhost\r\n\r\n');
    for (let i = 0; i < 100 && !out.text().includes('\r\n\r\n'); i++) await sleep(100);
    ws.close();
    expect(err.text() === '', `error channel: ${err.text()}`);
    const first = out.text().split('\r\n')[0];
    expect(first.startsWith('HTTP/1.') && first.includes(' 200'), `not an HTTP 200 response: ${JSON.stringify(first)}`);
  },
  20000,
);

await check('cleanup', async () => {
  await core.deleteNamespace({ name: NS });
});

process.exit(failed ? 1 : 0);
