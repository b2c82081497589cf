#!/usr/bin/env node
// minipay from Node.js: log in, read the balance, pay with an idempotency key (one payee,
// several in one PayBatch call, or several in one split payment, all or nothing) or refund a
// payment received, read the balance again;
// over mutual TLS, on the project's own .proto files (nothing generated).
//
//   MINIPAY_PASSWORD=alice-dev-pass node pay.js --username alice \
//     --to-bank beta --to-account B-2001 --amount 12.34 --idempotency-key demo-1
//   MINIPAY_PASSWORD=alice-dev-pass node pay.js --username alice \
//     --batch beta/B-2001=1.50,gamma/G-3001=2.25 --idempotency-key payroll-1
//   MINIPAY_PASSWORD=alice-dev-pass node pay.js --username alice \
//     --split beta/B-2001=1.50,gamma/G-3001=2.25 --idempotency-key order-1
//   MINIPAY_PASSWORD=carol-dev-pass node pay.js --username carol \
//     --refund pay_... [--amount 5.00] --idempotency-key demo-refund-1
//
// A batch's items are each a payment of their own, keyed <idempotency-key>-1, -2...: the
// same command again replays every item's first outcome. A split is one payment (one key):
// every payee is paid their share, or (any bank voting no) nobody is.
//
// Amounts are written and printed as the CLIs do: "12.34 USD", in the currency's own
// decimals. MINIPAY_GATEWAY may list several replicas (host:port,host:port): calls are
// spread over them with round robin, as the CLIs do. Every answer's x-request-id (initial
// metadata) is printed; an error goes to standard error with its google.rpc.Status details
// (the grpc-status-details-bin trailer). `node pay.js --help` lists the options. Exit
// status: 0 when every call answered (a payment may still be ABORTED: that is an answer),
// 1 on an error from the gateway, 2 on a usage error.
"use strict";

const crypto = require("node:crypto");
const dns = require("node:dns");
const fs = require("node:fs");
const net = require("node:net");
const path = require("node:path");
const { parseArgs } = require("node:util");

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const REPOSITORY = path.resolve(__dirname, "..", "..");
// The API: the .proto files import each other as "minipay/v1/...", relative to protofiles/.
// google/protobuf/timestamp.proto is one of the well-known types protobufjs carries itself.
const PROTO_ROOT = path.join(REPOSITORY, "protofiles");
// google/rpc/status.proto and error_details.proto are not part of the API's files: they are
// copied unchanged from googleapis (as googleapis-common-protos 1.76.0 ships them; Apache 2.0,
// header kept) into proto/.
const VENDORED_PROTOS = path.join(__dirname, "proto");
const DEV_CERTIFICATES = path.join(REPOSITORY, "certificate", "dev");
// The DNS name the gateway's certificate proves (GATEWAY_SERVER_NAME in
// minipay/service_names.py).
// No certificate names an address, so TLS is told to check this name instead of the host.
const GATEWAY_SERVER_NAME = "gateway.minipay.internal";

// Each option: a flag, the variable read when the flag is absent, and the default.
const OPTIONS = {
  gateway: {
    env: "MINIPAY_GATEWAY",
    default: "127.0.0.1:50051",
    help: "host:port, or several replicas' comma separated",
  },
  "server-name": {
    env: "MINIPAY_GATEWAY_SERVER_NAME",
    default: GATEWAY_SERVER_NAME,
    help: "the name the gateway's certificate must prove",
  },
  ca: {
    env: "MINIPAY_CA",
    default: path.join(DEV_CERTIFICATES, "services-ca.pem"),
    help: "the services CA, which signed the gateway's certificate",
  },
  cert: {
    env: "MINIPAY_CERT",
    default: path.join(DEV_CERTIFICATES, "client-1.pem"),
    help: "the client certificate (from the clients CA)",
  },
  key: {
    env: "MINIPAY_KEY",
    default: path.join(DEV_CERTIFICATES, "client-1-key.pem"),
    help: "its private key",
  },
  username: { env: "MINIPAY_USERNAME", help: "a registered customer" },
  "to-bank": { env: "MINIPAY_TO_BANK", help: "the payee's bank (no payee: no payment)" },
  "to-account": { env: "MINIPAY_TO_ACCOUNT", help: "the payee's account number" },
  amount: {
    env: "MINIPAY_AMOUNT",
    help: "a plain decimal in the currency's units, e.g. 12.34; with --refund: how much to give back",
  },
  refund: {
    env: "MINIPAY_REFUND",
    help: "refund this payment you received (default amount: all that is left to refund)",
  },
  currency: { env: "MINIPAY_CURRENCY", help: "ISO 4217 code (default: the account's)" },
  batch: {
    env: "MINIPAY_BATCH",
    help: "several payees in one PayBatch call: BANK/ACCOUNT=AMOUNT,BANK/ACCOUNT=AMOUNT...",
  },
  split: {
    env: "MINIPAY_SPLIT",
    help: "one split payment to 2-100 payees, all or nothing: BANK/ACCOUNT=AMOUNT,...",
  },
  "idempotency-key": {
    env: "MINIPAY_IDEMPOTENCY_KEY",
    help: "the same key again replays the first outcome (default: a new UUID)",
  },
  timeout: { env: "MINIPAY_TIMEOUT", default: "10", help: "seconds each call may take" },
};

function usage() {
  const lines = [
    "usage: node pay.js --username NAME [--to-bank BANK --to-account ACCOUNT --amount N]",
    "                   [--batch BANK/ACCOUNT=AMOUNT,...] [--split BANK/ACCOUNT=AMOUNT,...]",
    "       node pay.js --username NAME --refund PAYMENT_ID [--amount N] [...]",
    "",
  ];
  for (const [name, option] of Object.entries(OPTIONS)) {
    const fallback = option.default === undefined ? "" : ` (default: ${option.default})`;
    lines.push(`  --${name.padEnd(16)} ${option.env.padEnd(28)} ${option.help}${fallback}`);
  }
  lines.push(
    `  --${"password-stdin".padEnd(16)} ${"".padEnd(28)} read the password from standard input`,
    `    otherwise it comes from MINIPAY_PASSWORD; never from an argument, which other users see`,
  );
  return lines.join("\n");
}

class UsageError extends Error {}

function readConfig(argv, env) {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...Object.fromEntries(Object.keys(OPTIONS).map((name) => [name, { type: "string" }])),
      "password-stdin": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return null;
  const config = {};
  for (const [name, option] of Object.entries(OPTIONS)) {
    config[name] = values[name] ?? env[option.env] ?? option.default;
  }
  config.password = values["password-stdin"]
    ? fs.readFileSync(0, "utf8").replace(/\r?\n$/, "")
    : env.MINIPAY_PASSWORD;
  if (!config.username) throw new UsageError("--username (or MINIPAY_USERNAME) is required");
  if (!config.password) {
    throw new UsageError("give the password in MINIPAY_PASSWORD or with --password-stdin");
  }
  const payee = ["to-bank", "to-account", "amount"].filter((name) => config[name] !== undefined);
  if (config.refund !== undefined) {
    if (config["to-bank"] !== undefined || config["to-account"] !== undefined) {
      throw new UsageError("--refund gives back a payment: it takes no --to-bank or --to-account");
    }
  } else if (payee.length !== 0 && payee.length !== 3) {
    throw new UsageError("a payment needs --to-bank, --to-account and --amount");
  }
  if (config.amount !== undefined && !/^[0-9]{1,16}(\.[0-9]+)?$/.test(config.amount)) {
    throw new UsageError("--amount is a plain decimal number like 12.34");
  }
  if (!/^[0-9]+(\.[0-9]+)?$/.test(config.timeout)) throw new UsageError("--timeout is in seconds");
  config.batch = config.batch === undefined ? undefined : parseBatch(config.batch);
  config.split = config.split === undefined ? undefined : parseBatch(config.split, "--split");
  config["idempotency-key"] ??= crypto.randomUUID();
  const files = ["ca", "cert", "key"];
  config.pem = Object.fromEntries(files.map((name) => [name, readPem(config, name)]));
  return config;
}

// "beta/B-2001=1.50,gamma/G-3001=2.25" as [{bank, account, amount}], amounts still text.
function parseBatch(text, flag = "--batch") {
  const items = text.split(",").map((entry) => {
    const match = /^\s*([^/\s]+)\/([^=\s]+)=([0-9]{1,16}(\.[0-9]+)?)\s*$/.exec(entry);
    if (!match) throw new UsageError(`${flag}: ${entry.trim()} is not BANK/ACCOUNT=AMOUNT`);
    return { bank: match[1], account: match[2], amount: match[3] };
  });
  const most = flag === "--split" ? 100 : 1000;
  if (items.length > most) throw new UsageError(`${flag}: at most ${most} payees in one call`);
  return items;
}

function readPem(config, name) {
  try {
    return fs.readFileSync(config[name]);
  } catch (error) {
    throw new UsageError(`--${name} ${config[name]}: ${error.message}`);
  }
}

// -- amounts -----------------------------------------------------------------------------

// ISO 4217 exponents that are not 2 (minipay/money.py holds the whole table; a test checks
// that this one agrees with it): 1234 minor units are 12.34 USD, 1234 JPY, 1.234 BHD.
const EXPONENTS = {
  ...Object.fromEntries(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
      .split(" ")
      .map((code) => [code, 0]),
  ),
  ...Object.fromEntries("BHD IQD JOD KWD LYD OMR TND".split(" ").map((code) => [code, 3])),
  CLF: 4,
  UYW: 4,
};

function exponent(currency) {
  return EXPONENTS[currency] ?? 2;
}

// "12.34" and USD as minor units, as a decimal string (proto-loader sends it as an exact
// int64; the gateway checks the limit). Refuses more decimals than the currency has.
function toMinorUnits(text, currency) {
  const places = exponent(currency);
  const [whole, fraction = ""] = text.split(".");
  if (fraction.length > places) {
    throw new UsageError(`--amount ${text} has more than ${places} decimals for ${currency}`);
  }
  const minor = BigInt(whole + fraction.padEnd(places, "0"));
  if (minor <= 0n) throw new UsageError("--amount must be greater than zero");
  return minor.toString();
}

// Minor units (a decimal string or number) as "12.34": the currency's own decimals.
function formatMinorUnits(minorUnits, currency) {
  const places = exponent(currency);
  const negative = String(minorUnits).startsWith("-");
  const digits = String(minorUnits).replace(/^-/, "").padStart(places + 1, "0");
  const whole = digits.slice(0, digits.length - places);
  const text = places ? `${whole}.${digits.slice(digits.length - places)}` : whole;
  return negative ? `-${text}` : text;
}

// -- the gateway's address ---------------------------------------------------------------

// A gRPC target for one address, or for several replicas: "ipv4:a:p,b:q" names them all, so
// that the channel balances over them (round robin, set in channelOptions) and skips any
// that is down, as the CLIs do. Host names are resolved here, as the CLIs do.
async function gatewayTarget(addresses) {
  const listed = addresses
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
  if (listed.length === 0) throw new UsageError("--gateway: no address given");
  if (listed.length === 1) return listed[0];
  const resolved = await Promise.all(listed.map(resolveAddress));
  const families = new Set(resolved.map(({ family }) => family));
  if (families.size > 1) throw new UsageError(`--gateway ${addresses} mixes IPv4 and IPv6`);
  const [family] = families;
  return `ipv${family}:` + resolved.map(({ text }) => text).join(",");
}

async function resolveAddress(address) {
  const match = /^\[?(.+?)\]?:([0-9]+)$/.exec(address);
  if (!match) throw new UsageError(`--gateway: ${address} is not HOST:PORT`);
  const [, host, port] = match;
  let ip = host;
  if (!net.isIP(host)) {
    try {
      ip = (await dns.promises.lookup(host)).address;
    } catch (error) {
      throw new UsageError(`--gateway: cannot resolve ${host}: ${error.code ?? error.message}`);
    }
  }
  const family = net.isIP(ip);
  return { family, text: family === 6 ? `[${ip}]:${port}` : `${ip}:${port}` };
}

// -- the API -----------------------------------------------------------------------------

function loadApi() {
  const definition = protoLoader.loadSync("minipay/v1/gateway.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto files: minor_units, idempotency_key
    longs: String, // int64 (Money.minor_units, Timestamp.seconds) as exact decimal strings
    enums: String, // "PAYMENT_STATUS_COMMITTED" rather than 2
    defaults: true,
    oneofs: true, // PayBatchResult.outcome: "payment" or "error"
  });
  return grpc.loadPackageDefinition(definition).minipay.v1;
}

// The error model: google.rpc.Status, and the detail messages it carries in Any fields.
function loadErrorModel() {
  const root = new protobuf.Root();
  root.loadSync(
    ["status.proto", "error_details.proto"].map((file) =>
      path.join(VENDORED_PROTOS, "google", "rpc", file),
    ),
    { keepCase: true },
  );
  return root;
}

// The google.rpc.Status in an error's trailers, with its details decoded; null if none.
function statusDetails(errorModel, error) {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw) return null;
  const status = errorModel.lookupType("google.rpc.Status").decode(raw);
  const details = status.details.map((any) => {
    // "type.googleapis.com/google.rpc.ErrorInfo": the full name after the last slash.
    const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = errorModel.lookup(typeName);
    if (!(type instanceof protobuf.Type)) return { type: typeName };
    const message = type.toObject(type.decode(any.value), { longs: String, defaults: true });
    return { type: typeName, ...message };
  });
  return { code: status.code, message: status.message, details };
}

// -- calls -------------------------------------------------------------------------------

class CallError extends Error {
  constructor(method, error, requestId) {
    super(`${method}: ${grpc.status[error.code] ?? error.code}: ${error.details}`);
    this.grpcError = error;
    this.requestId = requestId;
  }
}

// One unary call, as a promise of { response, requestId }. The gateway puts x-request-id in
// every answer's initial metadata, which grpc-js hands over in the call's "metadata" event
// (before the callback runs); an error without initial metadata may carry it in its trailers.
function call(client, method, request, { token, timeout }) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  const deadline = new Date(Date.now() + Number(timeout) * 1000);
  return new Promise((resolve, reject) => {
    let headers = null;
    const pending = client[method](request, metadata, { deadline }, (error, response) => {
      const requestId =
        firstValue(headers, "x-request-id") ?? firstValue(error?.metadata, "x-request-id");
      const name = `${client.constructor.serviceName}/${method}`;
      if (error) reject(new CallError(name, error, requestId));
      else resolve({ response, requestId });
    });
    pending.on("metadata", (received) => {
      headers = received;
    });
  });
}

function firstValue(metadata, key) {
  const [value] = metadata?.get(key) ?? [];
  return value === undefined ? undefined : String(value);
}

// -- output ------------------------------------------------------------------------------

function when(timestamp) {
  if (!timestamp) return "-";
  return new Date(Number(timestamp.seconds) * 1000 + timestamp.nanos / 1e6).toISOString();
}

const account = (ref) => `${ref.bank}/${ref.account}`;
const money = (value) => `${formatMinorUnits(value.minor_units, value.currency)} ${value.currency}`;

function balanceLine(label, response) {
  const { balance, held, available } = response;
  return (
    `${label}: ${account(response.account)} balance ${money(balance)}, ` +
    `held ${money(held)}, available ${money(available)}`
  );
}

function paymentLine(response, key) {
  const payment = response.payment;
  const status = payment.status.replace(/^PAYMENT_STATUS_/, "");
  const reason = payment.reason_code ? ` (${payment.reason_code}: ${payment.reason})` : "";
  const replayed = response.replayed ? ", replayed: this key was used before" : "";
  // A split payment names its payees in shares, each with their amount.
  const payees = payment.shares?.length
    ? payment.shares.map((s) => `${account(s.payee)} ${money(s.amount)}`).join(", ")
    : account(payment.payee);
  const to = payment.shares?.length ? `split to ${payment.shares.length} payees: ` : "to ";
  return (
    `pay: ${payment.payment_id} ${status}${reason}: ${money(payment.amount)} ${to}` +
    `${payees}, idempotency key ${key}${replayed}`
  );
}

function refundLine(response, key) {
  const refund = response.refund;
  const status = refund.status.replace(/^PAYMENT_STATUS_/, "");
  const reason = refund.reason_code ? ` (${refund.reason_code}: ${refund.reason})` : "";
  const replayed = response.replayed ? ", replayed: this key was used before" : "";
  return (
    `refund: ${refund.payment_id} ${status}${reason}: ${money(refund.amount)} to ` +
    `${account(refund.payee)}, refund of ${refund.refund_of}, idempotency key ${key}${replayed}`
  );
}

// One line per item of a batch: its payment, or the error that refused it (an ItemError:
// what Pay would have answered for that item alone).
function batchLine(index, result, key) {
  if (result.outcome === "error") {
    const { code, reason, message } = result.error;
    return `batch[${index}]: refused ${code} (${reason}): ${message}, idempotency key ${key}`;
  }
  return paymentLine(result, key).replace(/^pay:/, `batch[${index}]:`);
}

function printError(error, errorModel) {
  console.error(`error: ${error.message}`);
  console.error(`  x-request-id: ${error.requestId ?? "(none)"}`);
  const status = statusDetails(errorModel, error.grpcError);
  for (const detail of status?.details ?? []) {
    if (detail.type === "google.rpc.ErrorInfo") {
      const metadata = JSON.stringify(detail.metadata);
      console.error(`  reason: ${detail.reason} (domain ${detail.domain}) metadata: ${metadata}`);
    } else if (detail.type === "google.rpc.BadRequest") {
      for (const violation of detail.field_violations) {
        console.error(`  field: ${violation.field}: ${violation.description}`);
      }
    } else if (detail.type === "google.rpc.RetryInfo") {
      const delay = detail.retry_delay;
      console.error(`  retry after: ${Number(delay.seconds) + delay.nanos / 1e9} s`);
    } else {
      console.error(`  detail: ${detail.type}`);
    }
  }
}

// -- the session ---------------------------------------------------------------------------

async function main() {
  let config;
  try {
    config = readConfig(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof UsageError || error.code?.startsWith("ERR_PARSE_ARGS"))) throw error;
    console.error(`error: ${error.message} (node pay.js --help lists the options)`);
    return 2;
  }
  if (config === null) {
    console.log(usage());
    return 0;
  }

  let target;
  try {
    target = await gatewayTarget(config.gateway);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message} (node pay.js --help lists the options)`);
    return 2;
  }
  const api = loadApi();
  const errorModel = loadErrorModel();
  // Mutual TLS: trust only the services CA for the server, present the client certificate.
  const credentials = grpc.credentials.createSsl(config.pem.ca, config.pem.key, config.pem.cert);
  const options = {
    "grpc.ssl_target_name_override": config["server-name"],
    // Several replicas: one connection to each, calls spread over those that are up.
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  };
  const auth = new api.Auth(target, credentials, options);
  // Both clients on one channel (one connection, one TLS handshake).
  const payments = new api.Payments(target, credentials, {
    ...options,
    channelOverride: auth.getChannel(),
  });
  const session = { timeout: config.timeout };
  const tagged = (line, requestId) => `${line}  [x-request-id ${requestId}]`;

  try {
    const signIn = { username: config.username, password: config.password };
    const login = await call(auth, "Login", signIn, session);
    const { token, role, expires_at } = login.response;
    session.token = token;
    const line = `login: ${config.username} (${role}), token valid until ${when(expires_at)}`;
    console.log(tagged(line, login.requestId));

    const before = await call(payments, "GetBalance", {}, session);
    console.log(tagged(balanceLine("balance", before.response), before.requestId));
    const asked = [config.amount, config.batch, config.split, config.refund];
    if (asked.every((value) => value === undefined)) return 0;

    const key = config["idempotency-key"];
    const currency = config.currency ?? before.response.balance.currency;
    let minorUnits, batch, shares;
    try {
      shares = config.split?.map((item) => ({
        payee: { bank: item.bank, account: item.account },
        amount: { minor_units: toMinorUnits(item.amount, currency), currency },
      }));
      if (config.amount !== undefined) minorUnits = toMinorUnits(config.amount, currency);
      batch = config.batch?.map((item, index) => ({
        to: { bank: item.bank, account: item.account },
        amount: { minor_units: toMinorUnits(item.amount, currency), currency },
        idempotency_key: `${key}-${index + 1}`,
      }));
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      console.error(`error: ${error.message} (node pay.js --help lists the options)`);
      return 2;
    }
    if (config.refund !== undefined) {
      const request = { payment_id: config.refund, idempotency_key: key };
      if (minorUnits !== undefined) request.amount = { minor_units: minorUnits, currency };
      const refunded = await call(payments, "Refund", request, session);
      console.log(tagged(refundLine(refunded.response, key), refunded.requestId));
    } else if (minorUnits !== undefined) {
      const paid = await call(
        payments,
        "Pay",
        {
          to: { bank: config["to-bank"], account: config["to-account"] },
          amount: { minor_units: minorUnits, currency },
          idempotency_key: key,
        },
        session,
      );
      console.log(tagged(paymentLine(paid.response, key), paid.requestId));
    }
    if (shares !== undefined) {
      // One payment, one key: every payee is paid their share, or nobody is.
      const paid = await call(payments, "Pay", { shares, idempotency_key: key }, session);
      console.log(tagged(paymentLine(paid.response, key), paid.requestId));
    }
    if (batch !== undefined) {
      // Each item is its own payment with its own outcome; the results come in order.
      const paid = await call(payments, "PayBatch", { items: batch }, session);
      const { results } = paid.response;
      results.forEach((result, index) => {
        console.log(batchLine(index + 1, result, batch[index].idempotency_key));
      });
      const count = (status) => results.filter((r) => r.payment?.status === status).length;
      const refused = results.filter((r) => r.outcome === "error").length;
      const line =
        `batch: ${results.length} items, ${count("PAYMENT_STATUS_COMMITTED")} committed, ` +
        `${count("PAYMENT_STATUS_ABORTED")} aborted, ${refused} refused`;
      console.log(tagged(line, paid.requestId));
    }

    const after = await call(payments, "GetBalance", {}, session);
    console.log(tagged(balanceLine("balance after", after.response), after.requestId));
    return 0;
  } catch (error) {
    if (!(error instanceof CallError)) throw error;
    printError(error, errorModel);
    return 1;
  } finally {
    auth.close();
    payments.close();
  }
}

if (require.main === module) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}

// For the tests: the amounts as this example writes and reads them.
module.exports = { exponent, formatMinorUnits, toMinorUnits };
