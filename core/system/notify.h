// systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram per state change to the Unix
// socket named by $NOTIFY_SOCKET ("@name" for the abstract namespace). cloudletd sends READY=1 once the store,
// the listeners and the plugins are up, WATCHDOG=1 from the loop (so a stuck loop gets the service restarted),
// and STOPPING=1 when a graceful shutdown begins. Without $NOTIFY_SOCKET every call does nothing.
#pragma once

#include <cstdint>
#include <string_view>

namespace cloudlet {

// Sends one notification ("READY=1\nSTATUS=..."). Loop thread (or before the loop runs); never blocks: the
// datagram is sent with MSG_DONTWAIT and dropped if the receiver's queue is full. False when not sent.
bool notify_send(std::string_view state);

// The watchdog interval systemd asked for ($WATCHDOG_USEC, for this process per $WATCHDOG_PID), in ms; 0 when
// there is none. Notify at half of it.
uint64_t notify_watchdog_ms();

}  // namespace cloudlet
