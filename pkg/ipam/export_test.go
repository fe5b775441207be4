package ipam

// The benchmark (bench_integration_test.go, package ipam_test) compares berth's candidate
// strategy with the naive first-free scan; production code has no use for the choice.
type Strategy = strategy

const (
	StrategySpread    = strategySpread
	StrategyFirstFree = strategyFirstFree
)

var WithStrategy = withStrategy
