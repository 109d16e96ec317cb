// faka pages: only improvements. The order page follows its status and
// shows the keys when they are delivered; copy buttons; the key upload form
// reads a chosen file into its text box; the order form shows its price
// (tiers, coupon) as the buyer types. Everything works without this.
"use strict";
(function () {
  function copyButtons(root) {
    root.querySelectorAll("[data-copy-key]").forEach(function (b) {
      if (b.dataset.bound) return;
      b.dataset.bound = "1";
      b.addEventListener("click", function () {
        var code = b.parentNode.querySelector("[data-key]");
        if (!code || !navigator.clipboard) return;
        navigator.clipboard.writeText(code.textContent).then(function () {
          var page = document.querySelector("[data-order-no]");
          b.textContent = page ? page.dataset.copied : "OK";
        });
      });
    });
  }

  function showKeys(page, keys) {
    var box = page.querySelector("[data-keys]");
    var list = box.querySelector("ul");
    list.textContent = "";
    keys.forEach(function (k) {
      var li = document.createElement("li");
      var code = document.createElement("code");
      code.setAttribute("data-key", "");
      code.textContent = k;
      var b = document.createElement("button");
      b.type = "button";
      b.setAttribute("data-copy-key", "");
      b.textContent = page.dataset.copy;
      li.appendChild(code);
      li.appendChild(b);
      list.appendChild(li);
    });
    box.hidden = false;
    page.querySelector("[data-status-label]").textContent = page.dataset.delivered;
    page.querySelectorAll("[data-help], .pay, .manual, [data-pending-only], [data-pending-only] + dd")
      .forEach(function (e) { e.hidden = true; });
    var ins = page.querySelector("[data-instructions]");
    if (ins) ins.hidden = false;
    copyButtons(page);
  }

  var FINAL = { delivered: 1, refunded: 1 };

  function follow(page) {
    var url = "/api/v1/orders/" + encodeURIComponent(page.dataset.orderNo) +
      "?token=" + encodeURIComponent(page.dataset.token);
    var status = page.querySelector("[data-order-status]");
    var delay = 2000;
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (o) {
          if (o && o.status !== status.textContent) {
            if (o.status === "delivered" && o.keys) {
              showKeys(page, o.keys);
              status.textContent = o.status;
            } else {
              // Texts that depend on the status come from the server.
              window.location.reload();
              return;
            }
          }
          if (!o || !FINAL[o.status]) {
            delay = Math.min(delay * 1.3, 15000);
            setTimeout(poll, delay);
          }
        })
        .catch(function () { setTimeout(poll, 15000); });
    }
    if (!FINAL[status.textContent]) setTimeout(poll, delay);
  }

  // The key file form posts itself without JavaScript; with it, the same
  // multipart body goes through XHR so the bar can show the upload.
  function upload(form) {
    var bar = form.querySelector("[data-progress]");
    var problem = form.querySelector("[data-upload-error]");
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      bar.hidden = false;
      bar.value = 0;
      problem.hidden = true;
      xhr.upload.onprogress = function (p) {
        if (p.lengthComputable) bar.value = Math.round((p.loaded / p.total) * 100);
      };
      xhr.onload = function () {
        if (xhr.status === 200) {
          window.location.assign(xhr.responseURL || window.location.href);
          return;
        }
        var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var msg = page.querySelector(".error, h1");
        problem.textContent = msg ? msg.textContent : String(xhr.status);
        problem.hidden = false;
      };
      xhr.onerror = function () {
        problem.textContent = "network error";
        problem.hidden = false;
      };
      xhr.send(new FormData(form));
    });
  }

  function money(minor, currency) {
    var amount = Math.floor(minor / 100) + "." + String(minor % 100).padStart(2, "0");
    var sign = { CNY: "¥", USD: "$", EUR: "€" }[currency];
    return sign ? sign + amount : amount + " " + currency;
  }

  // The order form's price, from the same quote the API answers (tiers,
  // coupon, stock), asked again as the buyer changes the form. Without
  // this script the order is simply priced when it is placed.
  function quote(form) {
    var out = form.querySelector("[data-quote]");
    var timer = null;
    var asked = 0;
    function ask() {
      var email = form.elements.email.value;
      var gateway = form.querySelector("input[name=gateway]:checked");
      var body = {
        product_id: form.elements.product_id.value,
        quantity: parseInt(form.elements.quantity.value, 10) || 0,
        // The price does not depend on who asks, but the body is an order's.
        email: /^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email) ? email : "quote@example.com",
        gateway: gateway ? gateway.value : "",
        coupon: form.elements.coupon.value.trim() || null
      };
      var mine = ++asked;
      fetch("/api/v1/orders/quote", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        credentials: "same-origin",
        body: JSON.stringify(body)
      })
        .then(function (r) { return r.json(); })
        .then(function (q) {
          if (mine !== asked) return;
          if (q.error) {
            out.textContent = q.error.message;
            out.classList.add("error");
          } else {
            var text = out.dataset.toPay + " " + money(q.amount, q.currency);
            if (q.discount > 0) {
              text += " (" + out.dataset.discount + " " + money(q.discount, q.currency) + ")";
            }
            out.textContent = text;
            out.classList.remove("error");
          }
          out.hidden = false;
        })
        .catch(function () { out.hidden = true; });
    }
    form.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(ask, 300);
    });
    ask();
  }

  document.addEventListener("DOMContentLoaded", function () {
    copyButtons(document);
    var page = document.querySelector("[data-order-no]");
    if (page) follow(page);
    var up = document.querySelector("[data-key-upload]");
    if (up) upload(up);
    var orderForm = document.querySelector("[data-quote-form]");
    if (orderForm) quote(orderForm);
  });
})();
