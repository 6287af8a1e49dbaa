/* The availability calendar of an instrument page (FullCalendar, served by the app).
   Data comes from data-* attributes (the CSP forbids inline scripts); free time is a
   background event group "free", and a selection must lie inside it. Choosing a range opens
   the confirmation page; the plain form under the calendar does the same without a mouse. */
(function () {
  "use strict";

  function showProblem(el) {
    var status = document.getElementById("calendar-status");
    if (status) {
      status.textContent = el.dataset.errorText;
      status.hidden = false;
    }
  }

  function start() {
    var el = document.getElementById("availability-calendar");
    if (!el) {
      return;
    }
    if (!window.FullCalendar) {
      showProblem(el);
      return;
    }
    var slot = parseInt(el.dataset.slotMinutes, 10) || 30;
    var duration = "00:" + String(slot % 60).padStart(2, "0");
    if (slot >= 60) {
      duration = String(Math.floor(slot / 60)).padStart(2, "0") + ":" + String(slot % 60).padStart(2, "0");
    }
    var narrow = window.matchMedia("(max-width: 600px)").matches;
    var calendar = new window.FullCalendar.Calendar(el, {
      timeZone: el.dataset.timeZone,
      locale: el.dataset.locale,
      initialView: narrow ? "timeGridDay" : "timeGridWeek",
      headerToolbar: {
        start: "prev,next today",
        center: "title",
        end: "timeGridWeek,timeGridDay"
      },
      allDaySlot: false,
      nowIndicator: true,
      height: "auto",
      slotDuration: duration,
      snapDuration: duration,
      slotMinTime: el.dataset.dayStart,
      slotMaxTime: el.dataset.dayEnd,
      selectable: true,
      selectMirror: true,
      selectConstraint: "free",
      selectLongPressDelay: 300,
      events: {
        url: el.dataset.eventsUrl,
        failure: function () { showProblem(el); }
      },
      select: function (info) {
        window.location.assign(
          el.dataset.bookUrl +
            "?start=" + encodeURIComponent(info.startStr) +
            "&end=" + encodeURIComponent(info.endStr)
        );
      }
    });
    calendar.render();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
