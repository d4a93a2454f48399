package blocktest

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/netproxy"
)

// Redeliveries: the MQTT connection is cut (the proxy between the block and
// Mosquitto closes it both ways, losing whatever was in the air: messages
// on their way to the block, PUBACKs on their way back), Mosquitto is
// restarted (persistence on, so it keeps the session), or the block is
// killed (SIGKILL) and restarted, sc.Kills times at random moments of a
// stream. Nothing is lost; what the broker sends again
// is counted, and those the block recognised as messages it already held
// are not spooled a second time. What remains as copies under new ids is
// reported: redeliveries of messages whose PUBACK the block had already
// sent, which MQTT 3.1.1 gives no safe way to tell from a new message.
func redeliveries(t *testing.T, tg *target, sc Scale) {
	n, cuts := sc.Messages, sc.Kills
	for _, how := range []string{"mqtt-cut", "broker-restart", "kill"} {
		t.Run(how, func(t *testing.T) {
			r := newRig(t, tg, rigOpts{broker: harness.MosquittoOptions{Persistence: true}, env: map[string]string{
				"BATCH_MAX_MESSAGES": strconv.Itoa(tg.batch),
			}})
			var proxy *netproxy.Proxy
			if how == "mqtt-cut" {
				p, err := netproxy.New(r.broker.Addr())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(p.Close)
				proxy = p
				r.block.Env["LOCAL_MQTT_HOST"] = "mqtt://" + p.Addr()
			}
			r.start()
			pub, began, done, stream, at := streamWithEvents(t, r, n, sc.Rate, cuts)
			// Each process counts what it recognised; a killed one's last
			// moments are missed (read just before the kill).
			recognisedBefore, redeliveredBefore := 0.0, 0.0
			for _, d := range at {
				time.Sleep(time.Until(began.Add(d)))
				switch how {
				case "kill":
					recognisedBefore += max(0, r.metric("cloudblock_mqtt_redeliveries_recognised_total"))
					redeliveredBefore += max(0, r.metric("cloudblock_mqtt_redelivered_total"))
					r.block.Kill()
					r.block.Start()
				case "mqtt-cut":
					proxy.SetMode(netproxy.Refuse)
					time.Sleep(100 * time.Millisecond)
					proxy.SetMode(netproxy.Pass)
				case "broker-restart":
					r.broker.Stop()
					r.broker.Start()
				}
			}
			<-done
			tl, _ := r.waitAll(n, crashSize, 5*time.Minute+stream, true)
			redelivered := redeliveredBefore + r.metric("cloudblock_mqtt_redelivered_total")
			recognised := recognisedBefore + r.metric("cloudblock_mqtt_redeliveries_recognised_total")
			newIDs := tl.Copies - tl.Resent
			note := fmt.Sprintf("%d %ss at %.0f msg/s: broker sent %.0f again, block recognised %.0f; %d copies under new ids, %d resent under their id",
				cuts, how, sc.Rate, redelivered, recognised, newIDs, tl.Resent)
			if how == "kill" {
				note = fmt.Sprintf("%d kills at %.0f msg/s: the block counted at least %.0f sent again and recognised %.0f; %d copies under new ids, %d resent under their id",
					cuts, sc.Rate, redelivered, recognised, newIDs, tl.Resent)
			}
			t.Logf("%s: %s; %s", tg.name, tl, note)
			if tl.Lost != 0 || tl.Corrupt != 0 {
				t.Errorf("lost or corrupt: %s, missing %v", tl, tl.Missing)
			}
			// Through the proxy the publisher's own connection is untouched,
			// so every copy under a new id is a redelivery the block did not
			// recognise. (A broker restart also makes the publisher's client
			// resend what it had in flight, which the broker takes as new.)
			if how == "mqtt-cut" && int(redelivered-recognised)+int(pub.Republish.Load()) < newIDs {
				t.Errorf("%d copies under new ids, more than the %.0f redeliveries not recognised", newIDs, redelivered-recognised)
			}
			r.report(how, tl, 0, note)
		})
	}
}
