// The ledger's SQL functions called from Node.js with the `pg` package.
//
//   LEDGER_DATABASE_URL=postgresql://user:password@host:5432/db node ledger_example.js
//
// Posts an entry, posts it again with the same idempotency key (a replay:
// same entry, nothing written), reads the balance, then tries a debit the
// owner cannot afford and catches the ledger's error by its SQLSTATE (LG001)
// and reads its JSON DETAIL. Every value travels as a bound parameter ($1,
// $2, ...), never inside the SQL text. Exits 0 when everything is as
// expected, 1 otherwise.

import { randomUUID } from "node:crypto";
import process from "node:process";

import pg from "pg";

const INSUFFICIENT_CREDITS = "LG001";

const POST_ENTRY = `
  SELECT entry_id, amount, balance, replayed
  FROM ledger.post_entry(owner_id => $1, app => 'core', operation => $2,
                         idempotency_key => $3, amount => $4)`;

const GET_BALANCE = `
  SELECT owner_id, balance, held, available, updated_at
  FROM ledger.get_balance(owner_id => $1)`;

class Unexpected extends Error {}

function expect(condition, what) {
  if (!condition) {
    throw new Unexpected(what);
  }
}

async function postEntry(client, ownerId, operation, key, amount) {
  const { rows } = await client.query(POST_ENTRY, [ownerId, operation, key, amount]);
  expect(rows.length === 1, `post_entry returned ${rows.length} rows`);
  return rows[0];
}

async function main() {
  const url = process.env.LEDGER_DATABASE_URL;
  if (!url) {
    throw new Unexpected("set LEDGER_DATABASE_URL to the URL of a migrated ledger database");
  }
  // A new owner on every run, so the example can run again and again.
  const ownerId = `example-node-${randomUUID()}`;
  const key = `${ownerId}-purchase-1`;
  const amount = 50;
  const tooMuch = 1_000_000;

  // bigint and numeric columns arrive as strings in `pg` (they may exceed a
  // JavaScript number): the comparisons below use BigInt.
  const client = new pg.Client({ connectionString: url, application_name: "ledger-example-node" });
  await client.connect();
  try {
    console.log(`owner ${ownerId}`);

    const first = await postEntry(client, ownerId, "CREDIT_ADD", key, amount);
    console.log(`posted entry ${first.entry_id}: amount ${first.amount}, balance ${first.balance}, replayed ${first.replayed}`);
    expect(first.replayed === false, "the first post was marked as a replay");
    expect(BigInt(first.balance) === BigInt(amount), `balance ${first.balance} after the first post`);

    const again = await postEntry(client, ownerId, "CREDIT_ADD", key, amount);
    console.log(`posted again with the same key: entry ${again.entry_id}, balance ${again.balance}, replayed ${again.replayed}`);
    expect(again.replayed === true, "the second post with the same key was not a replay");
    expect(again.entry_id === first.entry_id, `the replay returned entry ${again.entry_id}`);
    expect(again.balance === first.balance, "the replay changed the balance");

    const { rows } = await client.query(GET_BALANCE, [ownerId]);
    expect(rows.length === 1, `get_balance returned ${rows.length} rows`);
    const balance = rows[0];
    console.log(`balance of ${balance.owner_id}: balance ${balance.balance}, held ${balance.held}, available ${balance.available}, updated at ${balance.updated_at.toISOString()}`);
    expect(BigInt(balance.balance) === BigInt(amount), `balance ${balance.balance}`);
    expect(BigInt(balance.held) === 0n, `held ${balance.held}`);
    expect(BigInt(balance.available) === BigInt(amount), `available ${balance.available}`);

    try {
      await postEntry(client, ownerId, "CREDIT_SPEND", `${ownerId}-spend-1`, tooMuch);
      throw new Unexpected(`a debit of ${tooMuch} went through with ${amount} available`);
    } catch (error) {
      // `code` is the SQLSTATE; `detail` the DETAIL text, a JSON object.
      if (!(error instanceof pg.DatabaseError) || error.code !== INSUFFICIENT_CREDITS) {
        throw error;
      }
      const detail = JSON.parse(error.detail);
      console.log(`debit of ${tooMuch} refused: SQLSTATE ${error.code} (insufficient_credits), needed ${detail.needed}, available ${detail.available}`);
      expect(detail.owner_id === ownerId, `the error names owner ${detail.owner_id}`);
      expect(BigInt(detail.needed) === BigInt(tooMuch), `the error says ${detail.needed} needed`);
      expect(BigInt(detail.available) === BigInt(amount), `the error says ${detail.available} available`);
    }
    console.log("all as expected");
  } finally {
    await client.end();
  }
}

try {
  await main();
} catch (error) {
  const what = error instanceof pg.DatabaseError
    ? `SQLSTATE ${error.code}: ${error.message}`
    : error.message;
  console.error(`FAILED: ${what}`);
  process.exitCode = 1;
}
