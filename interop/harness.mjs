// The JavaScript side of the interop tests and the benchmark.
// Reads one JSON request {"op": ..., ...} on stdin, writes one JSON answer on stdout.
// It only drives the real npm packages pinned in package-lock.json; no logic of its own.
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

const require = createRequire(import.meta.url);
const rc = require('@elastic/request-crypto');
const makeAESCryptoWith = require('@elastic/node-crypto').default;
const jose = await import('jose');

const errorText = (err) => String((err && err.message) || err);

async function settle(items, fn) {
  const out = [];
  for (const item of items) {
    try {
      out.push({ ok: true, value: await fn(item) });
    } catch (err) {
      out.push({ ok: false, error: errorText(err) });
    }
  }
  return out;
}

async function timed(seconds, concurrency, fn) {
  // Sequential when concurrency is 1; otherwise rounds of Promise.all, as a Node service would.
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  const start = performance.now();
  while (performance.now() < deadline || done === 0) {
    await Promise.all(Array.from({ length: concurrency }, () => fn()));
    done += concurrency;
  }
  return done / ((performance.now() - start) / 1000);
}

const ops = {
  async decrypt({ jwks, bodies }) {
    const decryptor = await rc.createRequestDecryptor(jwks);
    return settle(bodies, async (body) => ({
      payload: await decryptor.decrypt(body),
      metadata: await decryptor.getJWKMetadata(body),
    }));
  },
  async encrypt({ jwks, items }) {
    const encryptor = await rc.createRequestEncryptor(jwks);
    return settle(items, ([kid, payload]) => encryptor.encrypt(kid, payload));
  },
  async generate({ kids }) {
    const manager = await rc.createJWKManager();
    for (const kid of kids) await manager.addKey(kid);
    return { private: manager.getPrivateJWKS(), public: manager.getPublicJWKS() };
  },
  async nodecrypto_encrypt({ passphrase_hex, items }) {
    const aes = makeAESCryptoWith({ encryptionKey: Buffer.from(passphrase_hex, 'hex') });
    return settle(items, ({ payload, aad }) => aes.encrypt(payload, aad ?? undefined));
  },
  async nodecrypto_decrypt({ passphrase_hex, items }) {
    const aes = makeAESCryptoWith({ encryptionKey: Buffer.from(passphrase_hex, 'hex') });
    return settle(items, ({ encrypted, aad }) => aes.decrypt(encrypted, aad ?? undefined));
  },
  async jose_encrypt({ jwk, enc, plaintexts }) {
    const key = await jose.importJWK(jwk, jwk.alg);
    return settle(plaintexts, (text) =>
      new jose.CompactEncrypt(new TextEncoder().encode(text))
        .setProtectedHeader({ alg: jwk.alg, enc, kid: jwk.kid })
        .encrypt(key));
  },
  async jose_decrypt({ jwk, tokens }) {
    const key = await jose.importJWK(jwk, jwk.alg);
    return settle(tokens, async (token) => {
      const { plaintext, protectedHeader } = await jose.compactDecrypt(token, key);
      return { plaintext: new TextDecoder().decode(plaintext), header: protectedHeader };
    });
  },
  async bench({ private_jwks, public_jwks, kid, payload, seconds, concurrency }) {
    const encryptor = await rc.createRequestEncryptor(public_jwks);
    const decryptor = await rc.createRequestDecryptor(private_jwks);
    const body = await encryptor.encrypt(kid, payload);
    return {
      encrypt_ops: await timed(seconds, concurrency, () => encryptor.encrypt(kid, payload)),
      decrypt_ops: await timed(seconds, concurrency, () => decryptor.decrypt(body)),
      body_bytes: body.length,
    };
  },
};

let input = '';
for await (const chunk of process.stdin) input += chunk;
const request = JSON.parse(input);
const op = ops[request.op];
if (!op) {
  process.stderr.write(`unknown op ${request.op}\n`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(await op(request)));
