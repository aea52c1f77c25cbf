// A real OpenID Provider for the review console's sign-in tests: panva/oidc-provider (an
// OpenID Certified implementation) on http://127.0.0.1:<port>, with one confidential client
// (authorization code flow, PKCE required), static accounts with passwords, a plain login form,
// consent granted for the one first-party client, and RP-initiated logout.
//
// Configured by one JSON document in OIDC_TEST_CONFIG:
//   {"port": 5050, "client_id": "...", "client_secret": "...",
//    "redirect_uri": "http://127.0.0.1:8080/console/callback",
//    "post_logout_redirect_uri": "http://127.0.0.1:8080/console/signed-out",
//    "claim": "groups",
//    "accounts": [{"id": "alice", "password": "...", "name": "Alice", "groups": ["..."]}]}
// Run by tests/test_console_oidc.py (`node provider.mjs`); prints "ready <issuer>" when up.
// Test use only: http issuer, keys made at start, state in memory.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OIDC_TEST_CONFIG);
const issuer = `http://127.0.0.1:${config.port}`;
const accounts = new Map(config.accounts.map((account) => [account.id, account]));
const claim = config.claim;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>${escape(title)}</title></head><body><main><h1>${escape(title)}</h1>${body}</main></body></html>`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: [config.redirect_uri],
      post_logout_redirect_uris: [config.post_logout_redirect_uri],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  pkce: { required: () => true },
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    [claim]: [claim],
  },
  scopes: ['openid', 'profile', claim],
  async findAccount(ctx, id) {
    const account = accounts.get(id);
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        const claims = { sub: id, name: account.name, preferred_username: id };
        if (account[claim] !== undefined) claims[claim] = account[claim];
        return claims;
      },
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out of the test provider?', `${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p>You are signed out of the test provider.</p>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Provider error', `<pre>${escape(JSON.stringify(out))}</pre>`);
  },
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600,
  },
});

function loginForm(uid, message) {
  return page('Sign in to the test provider', `${message ? `<p role="alert">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
  <label for="username">Username</label> <input id="username" name="username" required>
  <label for="password">Password</label> <input id="password" name="password" type="password" required>
  <button type="submit">Sign in</button>
</form>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(html);
}

// The interactions: a login form checking the static accounts' passwords, and consent granted
// for what the (one, first-party) client asks.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Wrong interaction', ''));
  const { prompt, params, session } = details;
  if (action === 'login' && req.method === 'POST') {
    const form = await readForm(req);
    const account = accounts.get(form.get('username') || '');
    if (!account || account.password !== form.get('password')) {
      return send(res, 200, loginForm(uid, 'Unknown username or wrong password'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: account.id } }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'login') return send(res, 200, loginForm(uid));
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 501, page('Not implemented', ''));
}

const callback = provider.callback();
const server = createServer((req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/(login))?(?:\?|$)/.exec(req.url);
  if (!match) return callback(req, res);
  return interaction(req, res, match[1], match[2]).catch((error) => {
    send(res, 400, page('Interaction failed', `<p>${escape(error.message)}</p>`));
  });
});
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
