// Keyboard shortcuts on the pharmacist's review screen: a = approve, r = reject (each moves to
// the reason, which is required), Ctrl/Cmd+Enter = record, n = next in the queue.
"use strict";
(function () {
  const form = document.getElementById("review-form");
  if (!form) {
    return;
  }
  const reason = form.querySelector("textarea[name=reason]");

  function choose(decision) {
    const radio = form.querySelector(`input[name=decision][value=${decision}]`);
    if (radio) {
      radio.checked = true;
      reason.focus();
    }
  }

  document.addEventListener("keydown", function (event) {
    const typing = ["TEXTAREA", "INPUT", "SELECT"].includes(document.activeElement.tagName);
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (event.key === "a") {
      event.preventDefault();
      choose("approved");
    } else if (event.key === "r") {
      event.preventDefault();
      choose("rejected");
    } else if (event.key === "n") {
      event.preventDefault();
      window.location.assign(form.dataset.nextUrl);
    }
  });
})();
