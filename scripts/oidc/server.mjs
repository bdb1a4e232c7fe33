// Starts npm's oidc-provider (the version package.json pins) as the OpenID Connect provider
// of Plue's sign-in tests (engine/tests/sign_in.rs): one confidential client, test users
// who sign in through a plain login form, and a groups claim.
//
//   node server.mjs CONFIG.json
//
// CONFIG.json: {"client_id", "client_secret", "redirect_uris": [...],
//               "users": [{"login", "password", "sub", "preferred_username", "groups": [...]}]}
//
// It listens on 127.0.0.1 on a free port and prints one JSON line when ready:
// {"issuer": "http://127.0.0.1:PORT"}. The login form is GET /interaction/UID (a form
// posting `login` and `password` to /interaction/UID/login); a wrong password is answered
// 401 with the form again. The client's grant is given at once (no consent page), PKCE is
// required, and the scopes' claims (profile, groups) are put in the ID token.
import http from 'node:http';
import fs from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const users = new Map(config.users.map((user) => [user.sub, user]));

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: config.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'groups'],
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  cookies: { keys: ['plue-sign-in-test-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const user = users.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, preferred_username: user.preferred_username, name: user.preferred_username, groups: user.groups || [] };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile groups');
    grant.addOIDCClaims(['sub', 'preferred_username', 'name', 'groups']);
    await grant.save();
    return grant;
  },
});

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function form(res, uid, status, message) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><title>Sign in</title><p>${escape(message)}</p>
<form method="post" action="/interaction/${escape(uid)}/login">
<input name="login"><input name="password" type="password"><button>Sign in</button></form>`);
}

function body(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.on('data', (chunk) => { text += chunk; if (text.length > 65536) reject(new Error('too long')); });
    req.on('end', () => resolve(new URLSearchParams(text)));
    req.on('error', reject);
  });
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  const match = /^\/interaction\/([^/?]+)(\/login)?/.exec(req.url);
  if (!match) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'GET' && !match[2]) return form(res, details.uid, 200, 'Sign in to the test provider.');
    if (req.method === 'POST' && match[2]) {
      const fields = await body(req);
      const user = config.users.find((u) => u.login === fields.get('login') && u.password === fields.get('password'));
      if (!user) return form(res, details.uid, 401, 'Wrong login or password.');
      return await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
    }
    res.writeHead(405).end();
  } catch (error) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${error.message}`);
  }
});

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
