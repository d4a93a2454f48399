package ehsink

import (
	"crypto/tls"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/entra"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Vars are the destination's variables.
var Vars = withIdentity(ownVars)

// withIdentity puts the keyless identities' variables after the client
// secret.
func withIdentity(vs []config.Var) []config.Var {
	i := slices.IndexFunc(vs, func(v config.Var) bool { return v.Name == "AZURE_EH_CLIENT_SECRET" }) + 1
	return slices.Concat(vs[:i], entra.Vars("AZURE_EH"), vs[i:])
}

var ownVars = []config.Var{
	{Name: "AZURE_EH_CONNECTIONSTRING", Aliases: []string{"AZURE_EH_CONNECTION_STRING"}, Secret: true,
		Doc: "Connection string of a shared access policy with the Send right: the event hub's (with `EntityPath=`) or the namespace's (then set `AZURE_EH_NAME`). " +
			"Required unless Microsoft Entra auth is configured with `AZURE_EH_NAMESPACE`; set exactly one of the two."},
	{Name: "AZURE_EH_NAME",
		Doc: "Event hub name. Required with a namespace-level connection string and with `AZURE_EH_NAMESPACE`; with a hub-level connection string it must equal its `EntityPath` (or stay unset)."},
	{Name: "AZURE_EH_NAMESPACE",
		Doc: "Microsoft Entra auth instead of a connection string (for namespaces with SAS keys disabled): the fully qualified namespace, e.g. `myns.servicebus.windows.net`. " +
			"The identity needs the Azure Event Hubs Data Sender role. Credential: the service principal below if set (a client secret, a client certificate or a federated token file), else DefaultAzureCredential (`AZURE_CLIENT_ID`/`AZURE_TENANT_ID`/`AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`, workload identity, managed identity, Azure CLI)."},
	{Name: "AZURE_EH_TENANT_ID", Doc: "Entra tenant id of a service principal (with `AZURE_EH_NAMESPACE`, `AZURE_EH_CLIENT_ID` and one credential: `AZURE_EH_CLIENT_SECRET`, a client certificate or a federated token file, below)."},
	{Name: "AZURE_EH_CLIENT_ID", Doc: "Application (client) id of that service principal."},
	{Name: "AZURE_EH_CLIENT_SECRET", Secret: true, Doc: "Client secret of that service principal (a long-lived secret: the certificate or the federated token file below leave none on the device)."},
	{Name: "AZURE_EH_PARTITION_KEY", Default: "none",
		Doc: "How events are spread over partitions: `none` lets Event Hubs choose; `device` routes every event of this device to one partition (key = device id); `topic` routes by MQTT topic. " +
			"With a key, batches are sent one at a time so each key's events keep their order."},
	{Name: "AZURE_EH_PARTITION_ID",
		Doc: "Send every event to this partition (e.g. `0`) instead; not together with a partition key. Batches are sent one at a time, in order."},
	{Name: "AZURE_EH_TRANSPORT", Default: transportAuto,
		Doc: "How to reach Event Hubs: `amqp` is AMQP over TCP port 5671; `websockets` is AMQP over WebSockets on port 443 (`wss://<namespace>/$servicebus/websocket`), " +
			"through the proxy `HTTPS_PROXY` names unless `NO_PROXY` excludes the namespace; `auto` uses WebSockets when such a proxy applies, " +
			"else tries AMQP and, if it cannot connect within 15 s (port 5671 blocked or dropped), WebSockets until the block restarts. " +
			"AMQP does not go through a proxy. With `UseDevelopmentEmulator=true` both are unencrypted on the endpoint's port (ws://, proxy from `HTTP_PROXY`)."},
	{Name: "AZURE_EH_CONSUMER_GROUP", Doc: "Receive-side setting of the original block: accepted and ignored (this block only sends)."},
	{Name: "AZURE_EH_STORAGE_ACCOUNT", Doc: "Receive-side setting of the original block: accepted and ignored."},
	{Name: "AZURE_EH_STORAGE_ACCOUNT_KEY", Secret: true, Doc: "Receive-side setting of the original block: accepted and ignored."},
	{Name: "AZURE_EH_CONTAINER_NAME", Doc: "Receive-side setting of the original block: accepted and ignored."},
}

// receiveOnly are the original block's variables that only mattered for receiving.
var receiveOnly = []string{"AZURE_EH_CONSUMER_GROUP", "AZURE_EH_STORAGE_ACCOUNT", "AZURE_EH_STORAGE_ACCOUNT_KEY", "AZURE_EH_CONTAINER_NAME"}

// Service is the Azure Event Hubs destination.
var Service = run.Service{Name: "azure-eh", Vars: Vars, New: New}

// Partition key modes.
const (
	keyNone   = "none"
	keyDevice = "device"
	keyTopic  = "topic"
)

var (
	namespaceRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?$`)
	partitionIDRE = regexp.MustCompile(`^[0-9]{1,4}$`)
)

// New reads the variables and returns the sink, not yet connected.
func New(l *config.Loader, info run.Info) (sink.Sink, error) {
	s := &Sink{log: info.Log, device: info.Device}

	conn := l.String("AZURE_EH_CONNECTIONSTRING")
	hub := l.String("AZURE_EH_NAME")
	ns := l.String("AZURE_EH_NAMESPACE")
	spn := entra.Set(l, "AZURE_EH")

	switch {
	case conn != "" && ns != "":
		l.Fail("AZURE_EH_NAMESPACE", ns, "unset when "+l.SetName("AZURE_EH_CONNECTIONSTRING")+
			" is set: configure one way to authenticate, a connection string or Microsoft Entra (AZURE_EH_NAMESPACE)")
	case conn == "" && ns == "":
		l.Require("AZURE_EH_CONNECTIONSTRING", "set it to a connection string with the Send right, "+
			"or set AZURE_EH_NAMESPACE and AZURE_EH_NAME for Microsoft Entra auth")
	case conn != "":
		for _, v := range Vars {
			if n := v.Name; strings.HasPrefix(n, "AZURE_EH_") && entraVar(n) && l.IsSet(n) {
				l.Fail(n, l.Optional(n), "unset: it is only used with AZURE_EH_NAMESPACE (Microsoft Entra auth), not with a connection string")
			}
		}
		s.fromConnectionString(l, conn, hub)
	default:
		if !namespaceRE.MatchString(ns) {
			l.Fail("AZURE_EH_NAMESPACE", ns, "a fully qualified namespace such as myns.servicebus.windows.net (no scheme, no path)")
		}
		if hub == "" {
			l.Require("AZURE_EH_NAME", "required with AZURE_EH_NAMESPACE (Microsoft Entra auth)")
		}
		var id *entra.Identity
		if spn {
			id = entra.Load(l, "AZURE_EH")
		} else {
			entra.Unused(l, "AZURE_EH")
		}
		if l.Err() == nil {
			if err := s.fromCredential(l, ns, hub, id); err != nil {
				return nil, err
			}
		}
	}

	s.transport = l.Enum("AZURE_EH_TRANSPORT", transportAuto, transportAMQP, transportWS)
	if s.transport == transportAMQP && s.fqdn != "" && s.ws.viaProxy(s.fqdn) && l.Err() == nil {
		s.log.Warn("AZURE_EH_TRANSPORT is amqp: Event Hubs is reached directly on port 5671, not through the proxy HTTPS_PROXY names; set websockets or auto to use it")
	}

	s.keyBy = l.Enum("AZURE_EH_PARTITION_KEY", keyNone, keyDevice, keyTopic)
	if id := l.String("AZURE_EH_PARTITION_ID"); id != "" {
		switch {
		case s.keyBy != keyNone:
			l.Fail("AZURE_EH_PARTITION_ID", id, "unset when AZURE_EH_PARTITION_KEY is "+s.keyBy+
				": events go to one fixed partition or are routed by a key, not both")
		case !partitionIDRE.MatchString(id):
			l.Fail("AZURE_EH_PARTITION_ID", id, "a partition id such as 0 (partitions are numbered from 0)")
		default:
			s.partitionID = id
		}
	}

	var ignored []string
	for _, n := range receiveOnly {
		if l.IsSet(n) {
			ignored = append(ignored, l.SetName(n))
		}
	}
	if len(ignored) > 0 && l.Err() == nil {
		s.log.Info("ignoring settings that only matter for receiving events: this block only sends", "variables", strings.Join(ignored, ","))
	}
	return s, nil
}

// fromConnectionString checks a SAS connection string and sets up the
// producer it makes. Parse errors are not echoed: a string mangled enough
// (a missing ';') would carry the key inside the value the SDK quotes.
func (s *Sink) fromConnectionString(l *config.Loader, conn, hub string) {
	name := "AZURE_EH_CONNECTIONSTRING"
	props, err := azeventhubs.ParseConnectionString(conn)
	if err != nil {
		l.Fail(name, conn, "a connection string such as Endpoint=sb://<namespace>.servicebus.windows.net/;"+
			"SharedAccessKeyName=<policy>;SharedAccessKey=<key>;EntityPath=<event hub> (Endpoint and a key or SharedAccessSignature are required)")
		return
	}
	s.secrets = append(s.secrets, conn)
	for _, v := range []*string{props.SharedAccessKey, props.SharedAccessSignature} {
		if v != nil && *v != "" {
			s.secrets = append(s.secrets, *v)
		}
	}
	hubArg := hub
	switch {
	case props.EntityPath == nil && hub == "":
		l.Require("AZURE_EH_NAME", "required: the connection string has no EntityPath (it is the namespace's), so name the event hub")
		return
	case props.EntityPath != nil && hub != "" && hub != *props.EntityPath:
		l.Fail("AZURE_EH_NAME", hub, fmt.Sprintf("the connection string's EntityPath %q, or unset", *props.EntityPath))
		return
	case props.EntityPath != nil:
		hubArg, hub = "", *props.EntityPath // the SDK takes the hub from EntityPath
	}
	s.where = props.FullyQualifiedNamespace + "/" + hub
	s.fqdn, s.ws = props.FullyQualifiedNamespace, wsDialer{plain: props.Emulator}
	s.dial = func(ws bool) (producer, error) {
		c, err := azeventhubs.NewProducerClientFromConnectionString(conn, hubArg, producerOptions(s.newWS(ws)))
		if err != nil {
			return nil, err
		}
		return sdkProducer{c}, nil
	}
}

// fromCredential sets up a producer authenticated by Microsoft Entra.
func (s *Sink) fromCredential(l *config.Loader, ns, hub string, id *entra.Identity) error {
	var tlsConf *tls.Config // nil: the SDK's, with the system's roots
	if id != nil {
		s.secrets = append(s.secrets, id.Secrets()...)
		s.identity = id.String()
		if id.Roots != nil {
			tlsConf = id.TLSConfig()
			s.ws.tls = tlsConf
		}
	}
	cred, err := newCredential(id)
	switch {
	case err != nil && id != nil:
		// The only argument azidentity checks up front.
		l.Fail("AZURE_EH_TENANT_ID", id.Tenant, "a tenant id (a GUID, or a domain such as contoso.onmicrosoft.com): "+redact(err.Error(), s.secrets))
		return nil
	case err != nil:
		return fmt.Errorf("AZURE_EH_NAMESPACE is set, but DefaultAzureCredential cannot be built from this environment: %s", redact(err.Error(), s.secrets))
	}
	s.where = ns + "/" + hub
	s.fqdn = ns
	// go-amqp checks the certificate against the namespace as given, port
	// and all: a namespace with a port (a private endpoint, a test) needs
	// the host named.
	if host, _, err := net.SplitHostPort(ns); err == nil {
		if tlsConf == nil {
			tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tlsConf = tlsConf.Clone()
		tlsConf.ServerName = host
	}
	s.dial = func(ws bool) (producer, error) {
		o := producerOptions(s.newWS(ws))
		if tlsConf != nil {
			o.TLSConfig = tlsConf.Clone() // go-amqp sets its ServerName when empty
		}
		c, err := azeventhubs.NewProducerClient(ns, hub, cred, o)
		if err != nil {
			return nil, err
		}
		return sdkProducer{c}, nil
	}
	return nil
}

// entraVar reports whether n is one of the service principal's variables.
func entraVar(n string) bool {
	for _, suf := range []string{entra.SufTenant, entra.SufClient, entra.SufSecret, entra.SufCert, entra.SufCertPath,
		entra.SufCertPassword, entra.SufTokenFile, entra.SufAuthority, entra.SufCAFile} {
		if n == "AZURE_EH_"+suf {
			return true
		}
	}
	return false
}
