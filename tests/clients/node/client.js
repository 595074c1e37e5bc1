// A Node program as a user writes it: application default credentials, then a token.
// Prints one JSON line: {"ok": true, "token": ...} or {"ok": false, "error": ...}.
const {GoogleAuth} = require('google-auth-library');

async function main() {
  try {
    const auth = new GoogleAuth({scopes: ['https://www.googleapis.com/auth/cloud-platform']});
    const client = await auth.getClient();
    const {token} = await client.getAccessToken();
    console.log(JSON.stringify({ok: true, token}));
  } catch (err) {
    console.log(JSON.stringify({ok: false, error: String(err && err.message ? err.message : err)}));
  }
}

main();
