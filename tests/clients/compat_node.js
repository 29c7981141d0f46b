// node-postgres compatibility checks (pg, pg-cursor, pg-copy-streams);
// prints one JSON object, the same against PostgreSQL and sluice.
// Usage: node compat_node.js HOST PORT USER DATABASE CREATE_STATEMENT
const { Client } = require('pg');
const Cursor = require('pg-cursor');
const { from: copyFrom } = require('pg-copy-streams');
const { Readable } = require('stream');
const { pipeline } = require('stream/promises');

const [host, port, user, database, create] = process.argv.slice(2);

async function main() {
  const client = new Client({ host, port: Number(port), user, database });
  await client.connect();
  await client.query(create);
  const out = {};
  const check = async (name, fn) => {
    try {
      out[name] = { ok: true, value: await fn() };
    } catch (e) {
      out[name] = { ok: false, error: String(e.message).split('\n')[0] };
    }
  };
  await check('select_one', async () => (await client.query('SELECT 1')).rows);
  await check('count_name', async () => {
    const r = await client.query('SELECT count(*) FROM nv');
    return r.fields.map((f) => f.name);
  });
  await check('parameterized_insert', async () => {
    let n = 0;
    for (let i = 0; i < 6; i++) {
      n += (await client.query({ name: 'ins', text: 'INSERT INTO nv (id, name) VALUES ($1, $2)', values: [i, 'n' + i] })).rowCount;
    }
    return n;
  });
  await check('copy_from', async () => {
    const stream = client.query(copyFrom('COPY nv (id, name) FROM STDIN (FORMAT csv)'));
    await pipeline(Readable.from(['10,a\n11,b\n']), stream);
    return stream.rowCount;
  });
  await check('cursor', async () => {
    await client.query('BEGIN');
    const cursor = client.query(new Cursor('SELECT id FROM nv WHERE id >= $1 ORDER BY id', [2]));
    const first = await cursor.read(3);
    const rest = await cursor.read(100);
    await cursor.close();
    await client.query('COMMIT');
    return { first: first.map((r) => r.id), rest: rest.length };
  });
  await check('fetch_tag', async () => {
    await client.query('BEGIN');
    await client.query('DECLARE c NO SCROLL CURSOR FOR SELECT id FROM nv ORDER BY id');
    const fetched = await client.query('FETCH 2 FROM c');
    let backward = null;
    try {
      await client.query('FETCH BACKWARD 1 FROM c');
    } catch (e) {
      backward = e.code;
    }
    await client.query('ROLLBACK');
    return { command: fetched.command, rowCount: fetched.rowCount, backward };
  });
  console.log(JSON.stringify(out));
  await client.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
