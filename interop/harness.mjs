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

// getJWKMetadata's `key` is a node-jose key object, whose toJSON() is the public JWK; report
// the members request_crypto's JWKMetadata.key holds, read from that object.
const describeMetadata = ({ key, protected: names, header }) => ({
  key: { kid: key.kid, kty: key.kty, use: key.use, alg: key.alg, length: key.length },
  protected: names,
  header,
});

// node-crypto takes a Buffer or a human string as its encryptionKey.
const passphraseOf = (hex, utf8) => (utf8 != null ? utf8 : Buffer.from(hex, 'hex'));

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
      metadata: describeMetadata(await decryptor.getJWKMetadata(body)),
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
  async nodecrypto_encrypt({ passphrase_hex, passphrase_utf8, items }) {
    const aes = makeAESCryptoWith({ encryptionKey: passphraseOf(passphrase_hex, passphrase_utf8) });
    return settle(items, ({ payload, aad }) => aes.encrypt(payload, aad ?? undefined));
  },
  async nodecrypto_decrypt({ passphrase_hex, passphrase_utf8, items }) {
    const aes = makeAESCryptoWith({ encryptionKey: passphraseOf(passphrase_hex, passphrase_utf8) });
    return settle(items, ({ encrypted, aad }) => aes.decrypt(encrypted, aad ?? undefined));
  },
  async stringify({ values }) {
    return values.map((value) => JSON.stringify(value));
  },
  async pack_body({ items }) {
    return items.map(([key, payload]) => rc.packBody(key, payload));
  },
  async unpack_body({ bodies }) {
    return settle(bodies, (body) => rc.unpackBody(body));
  },
  async well_knowns({ jwks }) {
    const decryptor = await rc.createRequestDecryptor(jwks);
    return decryptor.getWellKnowns();
  },
  // Several ops in one node start: {"op": "batch", "requests": [{"op": ...}, ...]}.
  async batch({ requests }) {
    const out = [];
    for (const request of requests) out.push(await ops[request.op](request));
    return out;
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
  // Signed bodies (issue 14): SignJWT, then CompactEncrypt with cty JWT, as the design
  // documents show it. `encrypt_jwk` is the receiver's public RSA JWK or a dir secret (oct).
  async jose_sign_encrypt({ sign_jwk, encrypt_jwk, items, jws_kid = true, jwe_kid = true }) {
    const signKey = sign_jwk.kty === 'oct'
      ? Buffer.from(sign_jwk.k, 'base64url')
      : await jose.importJWK(sign_jwk, sign_jwk.alg);
    const direct = encrypt_jwk.alg === 'dir';
    const encryptKey = direct
      ? Buffer.from(encrypt_jwk.k, 'base64url')
      : await jose.importJWK(encrypt_jwk, encrypt_jwk.alg);
    return settle(items, async ({ claims, issuer, audience, expires }) => {
      let jwt = new jose.SignJWT(claims)
        .setProtectedHeader(jws_kid ? { alg: sign_jwk.alg, kid: sign_jwk.kid } : { alg: sign_jwk.alg })
        .setIssuedAt()
        .setExpirationTime(expires ?? '2h');
      if (issuer) jwt = jwt.setIssuer(issuer);
      if (audience) jwt = jwt.setAudience(audience);
      const token = await jwt.sign(signKey);
      const header = { alg: encrypt_jwk.alg, cty: 'JWT', enc: 'A256GCM' };
      if (jwe_kid) header.kid = encrypt_jwk.kid;
      return new jose.CompactEncrypt(new TextEncoder().encode(token))
        .setProtectedHeader(header)
        .encrypt(encryptKey);
    });
  },
  // The receiving side in jose: compactDecrypt, then jwtVerify with the one expected alg.
  async jose_decrypt_verify({ decrypt_jwk, verify_jwk, tokens, issuer, audience }) {
    const direct = decrypt_jwk.alg === 'dir';
    const decryptKey = direct
      ? Buffer.from(decrypt_jwk.k, 'base64url')
      : await jose.importJWK(decrypt_jwk, decrypt_jwk.alg);
    const verifyKey = verify_jwk.kty === 'oct'
      ? Buffer.from(verify_jwk.k, 'base64url')
      : await jose.importJWK(verify_jwk, verify_jwk.alg);
    return settle(tokens, async (token) => {
      const { plaintext, protectedHeader } = await jose.compactDecrypt(token, decryptKey);
      if (protectedHeader.cty !== 'JWT') throw new Error(`cty ${protectedHeader.cty}`);
      const { payload, protectedHeader: signed } = await jose.jwtVerify(
        new TextDecoder().decode(plaintext), verifyKey,
        { algorithms: [verify_jwk.alg], issuer, audience },
      );
      return { payload, jwe_header: protectedHeader, jws_header: signed };
    });
  },
  // The JavaScript column of scripts/bench.py. `cases` is a list of
  // {name, op, payload, concurrency, seconds}, op one of encrypt | decrypt (the original's
  // API on payloads[payload]) | pbkdf2 | pbkdf2_sync | rsa_decrypt (the primitives underneath).
  // Each case is warmed up once, then timed (sequential when concurrency is 1, otherwise rounds
  // of Promise.all). Answers {results: {name: ops/s}, body_bytes, node, uv_threadpool_size}.
  // The older single-payload form ({payload, seconds, concurrency}) still answers as before.
  async bench({ private_jwks, public_jwks, kid, payload, payloads, cases, seconds, concurrency }) {
    const encryptor = await rc.createRequestEncryptor(public_jwks);
    const decryptor = await rc.createRequestDecryptor(private_jwks);
    if (!cases) {
      const body = await encryptor.encrypt(kid, payload);
      return {
        encrypt_ops: await timed(seconds, concurrency, () => encryptor.encrypt(kid, payload)),
        decrypt_ops: await timed(seconds, concurrency, () => decryptor.decrypt(body)),
        body_bytes: body.length,
      };
    }
    const crypto = await import('node:crypto');
    const bodies = {};
    const bodyBytes = {};
    for (const [name, value] of Object.entries(payloads || {})) {
      bodies[name] = await encryptor.encrypt(kid, value);
      bodyBytes[name] = bodies[name].length;
    }
    const salt = crypto.randomBytes(64);
    const password = crypto.randomBytes(32);
    const rsaKey = crypto.createPrivateKey({ key: private_jwks.keys[0], format: 'jwk' });
    const oaep = { key: rsaKey, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING };
    const wrapped = crypto.publicEncrypt(oaep, password);
    const makers = {
      encrypt: (c) => () => encryptor.encrypt(kid, payloads[c.payload]),
      decrypt: (c) => () => decryptor.decrypt(bodies[c.payload]),
      pbkdf2: () => () =>
        new Promise((resolve, reject) =>
          crypto.pbkdf2(password, salt, 10000, 32, 'sha512', (err, key) =>
            (err ? reject(err) : resolve(key)))),
      pbkdf2_sync: () => async () => crypto.pbkdf2Sync(password, salt, 10000, 32, 'sha512'),
      rsa_decrypt: () => async () => crypto.privateDecrypt(oaep, wrapped),
    };
    const results = {};
    for (const c of cases) {
      const fn = makers[c.op](c);
      await fn(); // warm-up: JIT, key import caches
      results[c.name] = await timed(c.seconds, c.concurrency || 1, fn);
    }
    return {
      results,
      body_bytes: bodyBytes,
      node: process.version,
      uv_threadpool_size: Number(process.env.UV_THREADPOOL_SIZE || 4),
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
