// walhook admin page: a few calls to the JSON API. Every value from the
// server is written with textContent or comes as HTML escaped by the
// server's templates.
"use strict";

function flash(text, bad) {
  const el = document.getElementById("flash");
  el.textContent = text;
  el.className = bad ? "bad" : "ok";
  el.hidden = false;
}

// api calls the JSON API and returns the decoded answer; it throws an
// Error with the server's message on a 4xx/5xx.
async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    throw new Error((data && data.error) || resp.status + " " + resp.statusText);
  }
  return data;
}

const hookPath = (name) => "/api/webhooks/" + encodeURIComponent(name);

// refreshRow replaces a table row with a fresh one rendered by the server.
async function refreshRow(tr) {
  const resp = await fetch("/webhooks/" + encodeURIComponent(tr.dataset.name) + "/row");
  if (!resp.ok) throw new Error("refresh: " + resp.status);
  const t = document.createElement("template");
  t.innerHTML = (await resp.text()).trim();
  tr.replaceWith(t.content.firstElementChild);
}

const rowActions = {
  async test(tr, name) {
    const r = await api("POST", hookPath(name) + "/test");
    const what = r.status ? "HTTP " + r.status : "no response";
    flash("Test ping to " + name + ": " + what + " in " + r.duration_ms.toFixed(1) + " ms" +
      (r.error ? " (" + r.error + ")" : ""), !r.ok);
    await refreshRow(tr);
  },
  async refresh(tr) {
    await refreshRow(tr);
  },
  async delete(tr, name) {
    if (!confirm("Delete webhook " + name + "? Its queue and history are dropped. This cannot be undone.")) return;
    await api("DELETE", hookPath(name));
    tr.remove();
    flash("Deleted " + name + ".");
  },
  async toggle(tr, name, input) {
    try {
      await api("POST", hookPath(name) + (input.checked ? "/activate" : "/deactivate"));
    } finally {
      await refreshRow(tr);
    }
  },
};

async function onRowAction(ev) {
  const el = ev.target.closest("[data-action]");
  const tr = el && el.closest("tr[data-name]");
  if (!tr || !rowActions[el.dataset.action]) return;
  if ((ev.type === "change") !== (el.dataset.action === "toggle")) return;
  el.disabled = true;
  try {
    await rowActions[el.dataset.action](tr, tr.dataset.name, el);
  } catch (e) {
    flash(e.message, true);
  } finally {
    el.disabled = false;
  }
}

function splitList(s) {
  return s.split(",").map((x) => x.trim()).filter((x) => x !== "");
}

function parseHeaders(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const i = line.indexOf(":");
    if (i <= 0) throw new Error("headers: write one \"Name: value\" per line (got \"" + line + "\")");
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

// webhookBody turns the form into the API's JSON.
function webhookBody(form) {
  const f = form.elements;
  const checked = (name) => [...form.querySelectorAll("input[name=" + name + "]:checked")].map((e) => e.value);
  const body = {
    url: f.url.value.trim(),
    active: f.active.checked,
    events: checked("events").concat(splitList(f.other_events.value)),
    actions: checked("actions"),
    method: f.method.value,
    content_type: f.content_type.value,
    include_entity: f.include_entity.checked,
    template: f.template.value,
    when: f.when.value.trim(),
    columns: splitList(f.columns.value),
    exclude_columns: splitList(f.exclude_columns.value),
    header_prefix: f.header_prefix.value.trim(),
    signature: f.signature.value,
    signature_header: f.signature_header.value.trim(),
    headers: parseHeaders(f.headers.value),
    basic_auth: { username: f.basic_user.value.trim() },
    timeout_ms: Number(f.timeout_ms.value),
    max_attempts: Number(f.max_attempts.value),
    retry_mode: f.retry_mode.value,
    rate_limit: Number(f.rate_limit.value),
    max_in_flight: f.max_in_flight.value === "" ? undefined : Number(f.max_in_flight.value),
    disable_after: f.disable_after.value.trim(),
    notify_email: f.notify_email.value.trim(),
    notify_on_failure: f.notify_on_failure.checked,
  };
  if (form.dataset.new === "true") body.name = f.name.value.trim();
  if (f.secret.value !== "") body.secret = f.secret.value;
  if (f.basic_password.value !== "") body.basic_auth.password = f.basic_password.value;
  return body;
}

async function onWebhookSubmit(ev) {
  ev.preventDefault();
  const form = ev.target;
  try {
    const isNew = form.dataset.new === "true";
    const r = isNew
      ? await api("POST", "/api/webhooks", webhookBody(form))
      : await api("PATCH", hookPath(form.dataset.name), webhookBody(form));
    if (r.secret) {
      form.hidden = true;
      document.getElementById("secret-value").textContent = r.secret;
      document.getElementById("secret-box").hidden = false;
      flash((isNew ? "Created " : "Updated ") + r.name + ".");
      return;
    }
    location.href = "/";
  } catch (e) {
    showWhenError(e.message);
    flash(e.message, true);
  }
}

// onWhenTest evaluates the form's when on the pasted event, or on the
// webhook's latest stored deliveries, and lists what would be sent.
async function onWhenTest(ev) {
  const el = ev.target.closest("button[data-action=when-test]");
  if (!el) return;
  const form = el.form;
  const out = document.getElementById("when-result");
  const body = { when: form.elements.when.value.trim() };
  const pasted = form.elements.when_event.value.trim();
  try {
    if (pasted !== "") body.event = JSON.parse(pasted);
    if (form.dataset.new === "true") throw new Error("Save the webhook first: the test runs on its deliveries and columns.");
    const r = await api("POST", hookPath(form.dataset.name) + "/when/test", body);
    showWhenError("");
    out.textContent = r.results.length === 0 ? "No stored deliveries to try it on." :
      r.results.map((x) => (x.sent ? "sent     " : "not sent ") + (x.event_id || "") + " " + x.event + (x.error ? "  error: " + x.error : "")).join("\n");
  } catch (e) {
    showWhenError(e.message);
    out.textContent = e.message;
  }
  out.hidden = false;
}

// showWhenError shows an error about the when expression beside it.
function showWhenError(message) {
  const el = document.getElementById("when-error");
  if (!el) return;
  const m = /when: (.*)$/.exec(message);
  el.textContent = m ? m[1] : "";
  el.hidden = !m;
}

async function onRedeliver(ev) {
  const el = ev.target.closest("button[data-action=redeliver]");
  if (!el) return;
  el.disabled = true;
  try {
    await api("POST", "/api/deliveries/" + encodeURIComponent(el.dataset.id) + "/redeliver");
    location.reload();
  } catch (e) {
    flash(e.message, true);
    el.disabled = false;
  }
}

async function onRecover(ev) {
  ev.preventDefault();
  const form = ev.target;
  try {
    const r = await api("POST", hookPath(form.dataset.name) + "/recover?since=" +
      encodeURIComponent(form.elements.since.value.trim()));
    flash(r.requeued + " failed deliveries queued again.");
    if (r.requeued > 0) setTimeout(() => location.reload(), 800);
  } catch (e) {
    flash(e.message, true);
  }
}

// onBackfill starts a backfill and follows it until it ends.
async function onBackfill(ev) {
  ev.preventDefault();
  const form = ev.target;
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const path = hookPath(form.dataset.name) + "/backfill";
    let r = await api("POST", path);
    while (r.state === "running") {
      flash("Backfill: " + r.rows_read + " rows read.");
      await new Promise((done) => setTimeout(done, 500));
      r = await api("GET", path);
    }
    if (r.state === "interrupted") {
      flash("Backfill interrupted: this walhook stopped or no longer leads; the next start or leader resumes it.");
      button.disabled = false;
      return;
    }
    if (r.state !== "done") throw new Error("Backfill failed: " + r.error);
    flash("Backfill done: " + r.rows_queued + " rows queued, " + r.rows_skipped + " left out for a newer change.");
  } catch (e) {
    flash(e.message, true);
  }
  button.disabled = false;
}

document.addEventListener("click", (ev) => { onRowAction(ev); onRedeliver(ev); onWhenTest(ev); });
document.addEventListener("change", onRowAction);
document.addEventListener("submit", (ev) => {
  if (ev.target.id === "webhook-form") onWebhookSubmit(ev);
  if (ev.target.id === "recover-form") onRecover(ev);
  if (ev.target.id === "backfill-form") onBackfill(ev);
});

// The overview strip on / reads /api/overview every 5 s, and the rows'
// figures and sparklines are drawn again every 30 s.
async function refreshOverview(strip) {
  try {
    const o = await api("GET", strip.dataset.src);
    for (const el of strip.querySelectorAll("[data-field]")) {
      el.textContent = o.text[el.dataset.field];
    }
    strip.classList.toggle("waiting", !o.reading);
    strip.classList.toggle("exceeded", o.lag_exceeded);
    strip.querySelector("[data-field=failed]").classList.toggle("bad-text", o.failed > 0);
    strip.dataset.updated = new Date().toISOString();
  } catch (e) {
    strip.dataset.error = e.message;
  }
}

const strip = document.getElementById("overview");
if (strip) {
  setInterval(() => refreshOverview(strip), 5000);
  setInterval(() => {
    for (const tr of document.querySelectorAll("table.webhooks tr[data-name]")) {
      if (!tr.contains(document.activeElement)) refreshRow(tr);
    }
  }, 30000);
}
