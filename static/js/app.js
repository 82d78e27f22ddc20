// Small behaviours htmx does not cover. No inline handlers: the CSP forbids them.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var remove = event.target.closest("[data-remove-row]");
    if (remove) {
      event.preventDefault();
      var row = remove.closest("tr");
      var form = remove.closest("form");
      var rows = row.parentElement.querySelectorAll("tr");
      if (rows.length > 1) {
        row.remove();
      } else {
        row.querySelectorAll("input").forEach(function (input) { input.value = input.name.endsWith("quantity") ? "1" : ""; });
      }
      if (form) form.dispatchEvent(new Event("items-changed", { bubbles: true }));
      return;
    }
    var opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      event.preventDefault();
      var dialog = document.getElementById(opener.getAttribute("data-open-dialog"));
      if (dialog) { dialog.showModal(); var first = dialog.querySelector("input"); if (first) first.focus(); }
      return;
    }
    var closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      event.preventDefault();
      closer.closest("dialog").close();
      return;
    }
    var copy = event.target.closest("[data-copy]");
    if (copy && navigator.clipboard) {
      event.preventDefault();
      navigator.clipboard.writeText(copy.getAttribute("data-copy")).then(function () {
        var label = copy.textContent;
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = label; }, 1500);
      });
    }
  });

  // A new row was added: let the totals catch up and put the cursor in it.
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "item-rows") {
      var rows = event.detail.target.querySelectorAll("tr");
      var last = rows[rows.length - 1];
      if (last) { var input = last.querySelector("input"); if (input) input.focus(); }
    }
  });

  // The inline customer dialog closes itself once the server says the customer exists.
  document.addEventListener("customer-created", function () {
    var dialog = document.getElementById("customer-dialog");
    if (dialog && dialog.open) dialog.close();
  });

  // On narrow screens the section links scroll sideways: keep the current one in view.
  document.addEventListener("DOMContentLoaded", function () {
    var nav = document.querySelector(".nav");
    var current = nav && nav.querySelector("[aria-current=page]");
    if (current && nav.scrollWidth > nav.clientWidth) {
      var offset = current.getBoundingClientRect().left - nav.getBoundingClientRect().left;
      nav.scrollLeft += offset - (nav.clientWidth - current.offsetWidth) / 2;
    }
  });

  // The editor's preview (PDF or email): its tabs submit the form into the preview frame, and
  // typing refreshes the visible one a moment after it stops. Nothing is saved by a preview.
  var previewTimer = null;
  function refreshPreview() {
    var current = document.querySelector("[data-preview][aria-selected=true]");
    if (current) current.click();
  }
  function previewLater() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(refreshPreview, 900);
  }
  function schedulePreview(event) {
    var form = document.getElementById("invoice-form");
    if (form && document.getElementById("preview-frame") && form.contains(event.target)) previewLater();
  }
  document.addEventListener("click", function (event) {
    var tab = event.target.closest("[data-preview]");
    if (!tab) return;
    // The click is itself the refresh: a pending one (the field left by this very click fires
    // its change first) would only render the same preview again and cut this one's load short.
    clearTimeout(previewTimer);
    document.querySelectorAll("[data-preview]").forEach(function (other) {
      other.setAttribute("aria-selected", other === tab ? "true" : "false");
    });
  });
  document.addEventListener("input", schedulePreview);
  document.addEventListener("change", schedulePreview);
  document.addEventListener("items-changed", schedulePreview);
  // A customer made in the dialog is selected by the server's response: preview them too.
  document.addEventListener("customer-created", function () {
    if (document.getElementById("preview-frame")) previewLater();
  });
  document.addEventListener("DOMContentLoaded", function () {
    // Phones rarely show a PDF inside a page: start them on the email, the PDF opens in a tab.
    var email = document.querySelector("[data-preview][value=email]");
    if (email && window.matchMedia("(max-width: 760px)").matches) {
      document.querySelectorAll("[data-preview]").forEach(function (tab) {
        tab.setAttribute("aria-selected", tab === email ? "true" : "false");
      });
    }
    refreshPreview();
  });

  // Submit a select's form when it changes (merchant switcher, list filters without htmx).
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) event.target.form.submit();
  });
})();
