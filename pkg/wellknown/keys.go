package wellknown

// Prefix is the prefix of every berth annotation, label and extended resource.
const Prefix = "berth.dev/"

// Keys the scheduler plugin reads from pods (and nodes).
const (
	// NetworkBandwidth is the extended resource, node annotation, node label and pod annotation
	// carrying a bandwidth in bits per second (a Kubernetes quantity such as 500M or 10G).
	NetworkBandwidth = Prefix + "network-bandwidth"
	// Profile overrides the profile class the scheduler derives from a pod's requests: cpu,
	// memory, network or balanced.
	Profile = Prefix + "profile"
)

// SchedulerPodAnnotations are the berth.dev/ pod annotations the scheduler plugin reads, each
// with what it means; the webhook admits them untouched.
var SchedulerPodAnnotations = map[string]string{
	Profile:          "berth-scheduler: profile class override",
	NetworkBandwidth: "berth-scheduler: network demand in bits/s",
}
