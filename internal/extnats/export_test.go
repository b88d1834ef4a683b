package extnats

// AccountOf is accountOf, for the tests.
var AccountOf = accountOf
