// Lab manager pages: "select all" in the approval queue, and the facility's week calendar
// (FullCalendar's free timeGrid view, fed by the facility's JSON endpoint, one instrument or all).
(function () {
  "use strict";

  function setUpSelectAll() {
    const all = document.getElementById("select-all");
    if (!all) return;
    const picks = () => Array.from(document.querySelectorAll("input.pick[form='bulk']"));
    all.addEventListener("change", () => {
      picks().forEach((box) => { box.checked = all.checked; });
    });
    document.addEventListener("change", (event) => {
      if (event.target.classList && event.target.classList.contains("pick")) {
        const boxes = picks();
        all.checked = boxes.length > 0 && boxes.every((box) => box.checked);
      }
    });
  }

  function describe(event) {
    const p = event.extendedProps || {};
    if (!p.booking_id) return p.kind_label || "";
    const parts = [p.instrument, p.user + (p.email ? " <" + p.email + ">" : "")];
    if (p.organisation) parts.push(p.organisation);
    if (p.purpose) parts.push(p.purpose);
    parts.push(p.status_label || p.status);
    return parts.join(" · ");
  }

  function setUpWeekCalendar() {
    const el = document.getElementById("week-calendar");
    if (!el || typeof FullCalendar === "undefined") return;
    const filter = document.getElementById("week-instrument");
    const details = document.getElementById("event-details");
    const calendar = new FullCalendar.Calendar(el, {
      initialView: "timeGridWeek",
      initialDate: el.dataset.initialDate,
      locale: el.dataset.locale,
      timeZone: el.dataset.timeZone,
      firstDay: 1,
      nowIndicator: true,
      allDaySlot: false,
      scrollTime: "08:00:00",
      contentHeight: 560,
      headerToolbar: { start: "prev,next today", center: "title", end: "timeGridWeek,timeGridDay,listWeek" },
      events: {
        url: el.dataset.eventsUrl,
        extraParams: () => (filter && filter.value ? { instrument_id: filter.value } : {}),
        failure: () => { if (details) details.textContent = el.dataset.failure || "⚠"; },
      },
      eventDidMount: (info) => {
        const text = describe(info.event);
        if (text) info.el.setAttribute("title", text);
      },
      eventClick: (info) => {
        if (details) details.textContent = describe(info.event);
      },
    });
    calendar.render();
    if (filter) filter.addEventListener("change", () => calendar.refetchEvents());
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpSelectAll();
    setUpWeekCalendar();
  });
})();
