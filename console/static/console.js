// The console's only script (the Content-Security-Policy allows no other): no inline code,
// handlers attached here. Text from the server is put in with textContent, never as HTML.
"use strict";

// A form that changes something sends once: a double click does not send it twice (the
// server is safe anyway: payments and deposits carry the form's idempotency key, and a
// confirmation is done once).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.method !== "post") return;
  if (form.dataset.submitted) {
    event.preventDefault();
    return;
  }
  form.dataset.submitted = "1";
});
// Back to a page from the browser's cache: its forms may be sent again.
window.addEventListener("pageshow", () => {
  document.querySelectorAll("form[data-submitted]").forEach((form) => {
    delete form.dataset.submitted;
  });
});

function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  row.append(td);
  return td;
}

function fillRow(row, payment) {
  row.replaceChildren();
  cell(row, payment.created_at);
  cell(row, payment.direction);
  cell(row, payment.counterparty);
  cell(row, payment.amount, "amount");
  const status = cell(row, "");
  const badge = document.createElement("span");
  badge.className = "status " + payment.status.toLowerCase();
  badge.textContent = payment.status;
  status.append(badge);
  if (payment.reason) {
    const reason = document.createElement("span");
    reason.className = "reason-code";
    reason.textContent = " " + payment.reason;
    status.append(reason);
  }
  const link = document.createElement("a");
  link.href = payment.url;
  link.textContent = payment.id;
  cell(row, "").append(link);
}

// A payment from the stream: update its row, or put a new one on top.
function upsert(table, payment) {
  const body = table.tBodies[0];
  body.querySelectorAll("tr.empty").forEach((row) => row.remove());
  let row = Array.from(body.rows).find((r) => r.dataset.paymentId === payment.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.paymentId = payment.id;
    body.prepend(row);
  }
  fillRow(row, payment);
  const max = Number(table.dataset.liveMax || 0);
  while (max && body.rows.length > max) body.deleteRow(-1);
}

function startLive(table) {
  const status = document.getElementById("live-status");
  const say = (text) => { if (status) status.textContent = text; };
  const source = new EventSource(table.dataset.liveUrl);
  source.addEventListener("open", () => say("live"));
  source.addEventListener("payment", (event) => upsert(table, JSON.parse(event.data)));
  source.addEventListener("ended", (event) => {
    say("stopped: " + event.data);
    source.close();
  });
  source.addEventListener("error", () => say("reconnecting…"));
  window.addEventListener("pagehide", () => source.close());
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table[data-live-url]").forEach(startLive);
});
