// Review console: runs a hook request through this service's own CDS endpoint (same origin),
// shows the cards the server renders, and sends CDS Hooks feedback. Plain JavaScript, no
// libraries. Text from requests and responses reaches the page only through textContent or
// through HTML the server rendered with everything escaped.
"use strict";

(function () {
  const PRETTY_LIMIT = 400000; // characters: larger requests stay compact in the text box
  const SHOW_LIMIT = 2000000; // characters of raw JSON shown at most

  function $(id) {
    return document.getElementById(id);
  }

  function newUuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function pretty(value) {
    const text = JSON.stringify(value, null, 2);
    return text.length > SHOW_LIMIT
      ? `${text.slice(0, SHOW_LIMIT)}\n… (${text.length - SHOW_LIMIT} more characters)`
      : text;
  }

  // Behind sign-in, every POST carries the session's CSRF token (from the page's meta tag).
  function postHeaders(headers) {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? Object.assign({ "X-CSRF-Token": meta.content }, headers) : headers;
  }

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: postHeaders({ "Content-Type": "application/json", Accept: "application/json" }),
      body: typeof body === "string" ? body : JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    data = type.includes("json") ? await response.json() : await response.text();
    return { status: response.status, ok: response.ok, data: data };
  }

  function diagnostics(outcome) {
    if (outcome && Array.isArray(outcome.issue)) {
      return outcome.issue.map((i) => i.diagnostics || i.code).join("; ");
    }
    return typeof outcome === "string" ? outcome.slice(0, 300) : "unexpected answer";
  }

  // ------------------------------------------------------------------ review page

  function initReview() {
    const text = $("request-text");
    const serviceSelect = $("service");
    const status = $("status");
    const cards = $("cards");
    let expected = null; // rule ids the loaded example expects, until the text is edited
    const urls = $("review").dataset; // examples, wrap, render, services: from the server

    function say(message) {
      status.textContent = message;
    }

    function selectHook(hook) {
      for (const option of serviceSelect.options) {
        if (option.dataset.hook === hook) {
          serviceSelect.value = option.value;
          return true;
        }
      }
      return false;
    }

    function showText(value) {
      const compact = JSON.stringify(value);
      text.value = compact.length < PRETTY_LIMIT ? JSON.stringify(value, null, 2) : compact;
    }

    function showExampleInfo(description, note) {
      const box = $("example-description");
      box.textContent = description || "";
      box.hidden = !description;
      const clock = $("clock-note");
      clock.textContent = note || "";
      clock.hidden = !note;
    }

    const exampleSelect = $("example");
    if (exampleSelect) {
      exampleSelect.addEventListener("change", async () => {
        const key = exampleSelect.value;
        if (!key) return;
        say(`Loading example ${key}…`);
        try {
          const path = key.split("/").map(encodeURIComponent).join("/");
          const response = await fetch(urls.examples + path, {
            headers: { Accept: "application/json" },
          });
          const data = await response.json();
          if (!response.ok) throw new Error(diagnostics(data));
          showText(data.request);
          if (data.expected.service) serviceSelect.value = data.expected.service;
          else selectHook(data.request.hook);
          expected = data.expected.rule_ids;
          showExampleInfo(
            `${data.expected.description} Expected: ${expected.join(", ") || "no cards"}.`,
            data.clockNote,
          );
          say(`Loaded example ${key}. Run the service to see its cards.`);
        } catch (error) {
          say(`Could not load the example: ${error.message}`);
        }
      });
    }

    text.addEventListener("input", () => {
      if (expected !== null) {
        expected = null;
        showExampleInfo("The request was edited: no expected cards to compare with.", "");
      }
    });
    text.addEventListener("change", () => {
      try {
        const value = JSON.parse(text.value);
        if (value && typeof value.hook === "string") selectHook(value.hook);
      } catch (ignored) {
        // not JSON yet: said when run
      }
    });

    $("upload").addEventListener("change", async (event) => {
      const file = event.target.files[0];
      if (!file) return;
      try {
        let content;
        if (/\.gz$/i.test(file.name)) {
          if (typeof DecompressionStream === "undefined") throw new Error("this browser cannot read .gz");
          const stream = file.stream().pipeThrough(new DecompressionStream("gzip"));
          content = await new Response(stream).text();
        } else {
          content = await file.text();
        }
        const value = JSON.parse(content);
        showText(value);
        expected = null;
        if (exampleSelect) exampleSelect.value = "";
        showExampleInfo(`Uploaded ${file.name}.`, "");
        if (value && typeof value.hook === "string") selectHook(value.hook);
        say(`Loaded ${file.name}. Run the service to see its cards.`);
      } catch (error) {
        say(`Could not read ${file.name}: ${error.message}`);
      }
    });

    $("run").addEventListener("click", async () => {
      const serviceId = serviceSelect.value;
      let input;
      try {
        input = JSON.parse(text.value);
      } catch (error) {
        say(`The input is not valid JSON: ${error.message}`);
        text.focus();
        return;
      }
      const run = $("run");
      run.disabled = true;
      try {
        let hookRequest = input;
        if (input && input.resourceType === "Bundle") {
          say("Making a hook request from the patient Bundle…");
          const wrapped = await postJson(urls.wrap, { bundle: input, service: serviceId });
          if (!wrapped.ok) {
            say(`The Bundle cannot be used: ${diagnostics(wrapped.data)}`);
            return;
          }
          hookRequest = wrapped.data;
        } else if (input && typeof input === "object" && $("fresh-instance").checked) {
          hookRequest = Object.assign({}, input, { hookInstance: newUuid() });
        }
        $("raw-request").textContent = pretty(hookRequest);
        say(`Calling POST ${urls.services}${serviceId}…`);
        const started = performance.now();
        const answer = await postJson(
          urls.services + encodeURIComponent(serviceId),
          JSON.stringify(hookRequest),
        );
        const ms = Math.round(performance.now() - started);
        $("raw-response").textContent =
          typeof answer.data === "string" ? answer.data : pretty(answer.data);
        const rendered = await fetch(urls.render, {
          method: "POST",
          headers: postHeaders({ "Content-Type": "application/json" }),
          body: JSON.stringify({
            service: serviceId,
            response: answer.data,
            status: answer.status,
            expected: expected,
            patientId: hookRequest && hookRequest.context ? hookRequest.context.patientId : null,
          }),
        });
        // Server-rendered from the response with every value escaped (see cards.html).
        cards.innerHTML = await rendered.text();
        if (answer.ok && answer.data && Array.isArray(answer.data.cards)) {
          const n = answer.data.cards.length;
          say(`${n} card${n === 1 ? "" : "s"} from ${serviceId} (HTTP ${answer.status}, ${ms} ms).`);
        } else {
          say(`The service answered HTTP ${answer.status}: ${diagnostics(answer.data)}`);
        }
      } catch (error) {
        say(`The call failed: ${error.message}`);
      } finally {
        run.disabled = false;
      }
    });

    // -------------------------------------------------------------- feedback

    function logFeedback(line) {
      const item = document.createElement("li");
      item.textContent = line;
      $("feedback-log").appendChild(item);
    }

    async function sendFeedback(card, item, done, what) {
      const serviceId = card.closest(".card-list").dataset.service;
      const cardStatus = card.querySelector(".feedback-status");
      cardStatus.classList.remove("error");
      cardStatus.textContent = "Sending feedback…";
      const body = {
        feedback: [Object.assign({ card: card.dataset.card, outcomeTimestamp: new Date().toISOString() }, item)],
      };
      try {
        const answer = await postJson(
          `${urls.services}${encodeURIComponent(serviceId)}/feedback`,
          body,
        );
        if (!answer.ok) throw new Error(diagnostics(answer.data));
        done();
        cardStatus.textContent = `${what}: feedback sent to the service.`;
        logFeedback(`${new Date().toLocaleTimeString()} · ${card.dataset.rule} · ${what}`);
      } catch (error) {
        cardStatus.classList.add("error");
        cardStatus.textContent = `Feedback not sent: ${error.message}`;
      }
    }

    cards.addEventListener("click", async (event) => {
      // Lift a quiet entry (cards quieted by feedback): the operator's POST, answered in JSON.
      const lift = event.target.closest("button.lift");
      if (lift && !lift.disabled) {
        const line = lift.parentElement.querySelector(".lift-status");
        lift.disabled = true;
        const answer = await postJson(lift.dataset.lift, {});
        line.textContent = answer.ok
          ? (answer.data.lifted ? "Lifted: the card shows again from the next call." : "Already lifted.")
          : `Not lifted: ${diagnostics(answer.data)}`;
        if (!answer.ok) lift.disabled = false;
        return;
      }
      const button = event.target.closest("button.accept");
      if (!button || button.disabled) return;
      const card = button.closest(".cds-card");
      const label = button.firstChild.textContent.trim();
      sendFeedback(
        card,
        { outcome: "accepted", acceptedSuggestions: [{ id: button.dataset.suggestion }] },
        () => {
          button.setAttribute("aria-pressed", "true");
          button.disabled = true;
          if (card.dataset.selection === "at-most-one") {
            card.querySelectorAll("button.accept").forEach((b) => (b.disabled = true));
          }
        },
        `Accepted “${label}”`,
      );
    });

    cards.addEventListener("submit", (event) => {
      const form = event.target.closest("form.override");
      if (!form) return;
      event.preventDefault();
      const card = form.closest(".cds-card");
      const select = form.querySelector("select");
      const item = { outcome: "overridden" };
      let what = "Dismissed";
      if (select) {
        const option = select.selectedOptions[0];
        if (!option || !option.value) {
          select.focus();
          return;
        }
        item.overrideReason = {
          reason: {
            system: option.dataset.system,
            code: option.dataset.code,
            display: option.dataset.display,
          },
        };
        what = `Overridden: ${option.dataset.display || option.dataset.code}`;
      }
      sendFeedback(
        card,
        item,
        () => {
          form.querySelectorAll("select, button").forEach((el) => (el.disabled = true));
          card.querySelectorAll("button.accept").forEach((b) => (b.disabled = true));
          card.classList.add("overridden");
        },
        what,
      );
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if ($("review")) initReview();
  });
})();
