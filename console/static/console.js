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

// The admin's live page: every event on top as it comes; Pause closes the stream and keeps
// the last sequence seen, Resume opens it again from there (?after=), so nothing is missed.
function eventRow(event) {
  const row = document.createElement("tr");
  row.dataset.sequence = event.sequence;
  cell(row, event.sequence);
  cell(row, event.occurred_at);
  cell(row, event.type, "type");
  const what = cell(row, "");
  if (event.url) {
    const link = document.createElement("a");
    link.href = event.url;
    link.textContent = event.summary;
    what.append(link);
  } else {
    what.textContent = event.summary;
  }
  return row;
}

function startEvents(table) {
  const status = document.getElementById("live-status");
  const shownCursor = document.getElementById("live-cursor");
  const pause = document.getElementById("live-pause");
  const resume = document.getElementById("live-resume");
  const say = (text) => { if (status) status.textContent = text; };
  const body = table.tBodies[0];
  const max = Number(table.dataset.liveMax || 0);
  let after = "";
  let source = null;
  const moved = (sequence) => {
    after = sequence;
    if (shownCursor) shownCursor.textContent = sequence;
  };
  const open = () => {
    const url = table.dataset.eventsUrl + (after ? "?after=" + encodeURIComponent(after) : "");
    source = new EventSource(url);
    source.addEventListener("open", () => say("live"));
    source.addEventListener("event", (message) => {
      const event = JSON.parse(message.data);
      body.querySelectorAll("tr.empty").forEach((row) => row.remove());
      body.prepend(eventRow(event));
      while (max && body.rows.length > max) body.deleteRow(-1);
      moved(event.sequence);
    });
    source.addEventListener("cursor", (message) => moved(message.data));
    source.addEventListener("ended", (message) => {
      say("stopped: " + message.data);
      source.close();
    });
    source.addEventListener("error", () => say("reconnecting…"));
  };
  if (pause && resume) {
    pause.addEventListener("click", () => {
      if (source) source.close();
      source = null;
      say("paused");
      pause.hidden = true;
      resume.hidden = false;
    });
    resume.addEventListener("click", () => {
      pause.hidden = false;
      resume.hidden = true;
      say("connecting…");
      open();
    });
  }
  window.addEventListener("pagehide", () => { if (source) source.close(); });
  open();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table[data-live-url]").forEach(startLive);
  document.querySelectorAll("table[data-events-url]").forEach(startEvents);
});
